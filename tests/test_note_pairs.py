"""Note pairs (image -> own radiograph sentences), their split check, the two NLG baselines and
the NLG section on real pycocoevalcap scores (issue #10 §4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from crrg.data.records import Record
from crrg.data.splits import split_of
from crrg.metrics.nlg import NLG_KEYS
from train.note_nlg import most_common_report, nearest_indices, note_nlg, retrieval_reports, score
from train.note_pairs import (NotePair, SplitLeakError, assert_patient_disjoint, leaking_patients,
                              note_pairs, read_note_records)

RADIOGRAPH = "The chest film shows consolidation in the right upper lobe."
CT = "CT showed ground-glass opacities in the left lower lobe."
HISTORY = "On day 3 the patient was admitted with infiltrates in both lungs."
NOTE = f"A man presented with fever and cough. {RADIOGRAPH} {CT} {HISTORY}"


def _record(image: str, patient: str, split: str, text: str | None = NOTE,
            source: str = "covid_lung_boxes", kind: str | None = "clinical_notes") -> dict:
    return {"image": image, "patient": patient, "split": split, "source": source, "text": text,
            "text_kind": kind}


def _pair(image: str, patient: str, split: str, text: str) -> NotePair:
    return NotePair(image=image, patient=patient, split=split, source="covid_lung_boxes",
                    sentences=(text,))


def test_pairs_keep_radiograph_sentences_only() -> None:
    records = [
        _record("b.jpg", "p2", "test", "Fever and cough. Right lung opacity on the radiograph. Heart size is normal."),
        _record("a.jpg", "p1", "train"),
        _record("a.jpg", "p1", "train"),  # listed twice: one pair
        _record("c.jpg", "p3", "train", f"{CT} {HISTORY}"),  # nothing left: no pair
        _record("d.jpg", "p4", "train", RADIOGRAPH, kind="report"),  # not a clinical note
        _record("e.jpg", "p5", "train", None),
    ]
    pairs = note_pairs(records)
    assert [(p.image, p.split) for p in pairs] == [("b.jpg", "test"), ("a.jpg", "train")]  # sorted
    test, train = pairs
    assert train.sentences == (RADIOGRAPH,) and train.reference == RADIOGRAPH  # CT and history dropped
    assert test.sentences == ("Right lung opacity on the radiograph.",)
    assert train.patient == "p1" and train.source == "covid_lung_boxes"
    assert note_pairs(list(reversed(records))) == pairs  # deterministic, order-free
    assert train.as_dict()["reference"] == RADIOGRAPH


def test_pairs_from_reader_records_take_the_project_split(tmp_path: Path) -> None:
    record = Record(source="covid_anatomy", patient="42", image=tmp_path / "covid_anatomy" / "x.jpg",
                    text=NOTE, text_kind="clinical_notes")
    (pair,) = note_pairs([record], data_root=tmp_path)
    assert pair.image == "covid_anatomy/x.jpg" and pair.split == split_of(record)
    assert pair.patient_key == ("covid-chestxray-dataset", "42")
    with pytest.raises(ValueError, match="split"):
        note_pairs([_record("a.jpg", "p1", None)])  # type: ignore[arg-type]


def test_split_check_fails_on_a_leaking_patient() -> None:
    clean = [_pair("a.jpg", "p1", "train", RADIOGRAPH), _pair("b.jpg", "p2", "test", RADIOGRAPH)]
    assert leaking_patients(clean) == {}
    assert_patient_disjoint(clean)
    # the same patient in both COVID sets is one patient (one split namespace)
    other_set = NotePair("c.jpg", "p1", "test", "covid_anatomy", (RADIOGRAPH,))
    leak = [*clean, other_set]
    assert leaking_patients(leak) == {("covid-chestxray-dataset", "p1"): ["train", "test"]}
    with pytest.raises(SplitLeakError, match="p1"):
        assert_patient_disjoint(leak)
    with pytest.raises(SplitLeakError):
        note_nlg(leak, lambda p: ["x"] * len(p), lambda p: np.eye(len(p)))


def test_most_common_baseline() -> None:
    train = [_pair(f"{i}.jpg", f"p{i}", "train", t)
             for i, t in enumerate(["Right lung opacity.", "Left lung opacity.", "Left lung opacity.",
                                    "Clear lungs."])]
    assert most_common_report(train) == "Left lung opacity."
    assert most_common_report(train[:2]) == "Left lung opacity."  # tie: alphabetical
    with pytest.raises(ValueError):
        most_common_report([])


def test_retrieval_picks_the_nearest_training_note() -> None:
    train = [_pair("a.jpg", "p1", "train", "Right upper lobe consolidation."),
             _pair("b.jpg", "p2", "train", "Left lower lobe opacity."),
             _pair("c.jpg", "p3", "train", "Bilateral infiltrates.")]
    test = [_pair("t1.jpg", "p4", "test", "x"), _pair("t2.jpg", "p5", "test", "y"),
            _pair("t3.jpg", "p6", "test", "z")]
    train_emb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # cosine, not dot product: t1 is long but points at b; t2 nearest c; t3 nearest a
    test_emb = torch.tensor([[1.0, 5.0, 0.0], [0.1, 0.2, 0.9], [3.0, 1.0, 1.0]])
    assert nearest_indices(train_emb, test_emb) == [1, 2, 0]
    assert nearest_indices(10 * train_emb.numpy(), test_emb.numpy()) == [1, 2, 0]  # scale-free
    assert retrieval_reports(train, test, train_emb, test_emb) == [
        "Left lower lobe opacity.", "Bilateral infiltrates.", "Right upper lobe consolidation."]
    with pytest.raises(ValueError):
        nearest_indices(train_emb, torch.ones(2, 4))


def test_nlg_scores_have_every_key() -> None:
    if shutil.which("java") is None:
        pytest.skip("METEOR needs Java (not on PATH)")
    refs = ["There is consolidation in the right upper lobe.", "The lungs are clear.",
            "Bilateral patchy opacities are seen."]
    hyps = ["There is consolidation in the right lung.", "The lungs are clear.", ""]
    scores = score(refs, hyps)
    assert list(scores) == list(NLG_KEYS)
    assert all(0.0 <= scores[k] <= 1.0 for k in NLG_KEYS if k != "cider") and scores["cider"] >= 0.0
    assert scores["bleu_1"] > scores["bleu_4"] > 0.0


def test_note_nlg_section_end_to_end_on_fake_systems() -> None:
    train = [_pair("a.jpg", "p1", "train", "There is consolidation in the right upper lobe."),
             _pair("b.jpg", "p2", "train", "Bilateral patchy opacities are seen."),
             _pair("b2.jpg", "p2", "train", "Bilateral patchy opacities are seen.")]
    test = [_pair("t1.jpg", "p3", "test", "Consolidation in the right upper lobe."),
            _pair("t2.jpg", "p4", "test", "Patchy opacities in both lungs.")]
    vectors = {"a.jpg": [1, 0], "b.jpg": [0, 1], "b2.jpg": [0.1, 1], "t1.jpg": [1, 0.2], "t2.jpg": [0.2, 1]}
    seen: list[str] = []

    def generate(paths: list[Path]) -> list[str]:
        seen.extend(p.name for p in paths)
        return ["Consolidation in the right upper lobe." if p.name == "t1.jpg" else "" for p in paths]

    def embed(paths: list[Path]) -> torch.Tensor:
        return torch.tensor([vectors[p.name] for p in paths], dtype=torch.float32)

    result = note_nlg([*train, *test], generate, embed, root=Path("/data"), metrics=("bleu", "rouge", "cider"),
                      batch_size=1, bootstrap_rounds=20)
    assert seen == ["t1.jpg", "t2.jpg"]  # only test images get a report
    assert result["n_pairs"] == 2 and result["n_train_pairs"] == 3 and result["n_patients"] == 2
    keys = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"]
    for scores in (result["model"], *result["baselines"].values()):
        assert list(scores) == keys
    assert result["model"]["rouge_l"] == pytest.approx(0.5)  # one exact copy, one empty report
    assert result["empty_model_reports"] == 1 and isinstance(result["reference"], str)
    assert set(result["bootstrap"]["share_model_better"]) == {"most_common", "retrieval"}
    assert "2 training images" in result["baseline_notes"]["most_common"]
    no_test = note_nlg(train, generate, embed)
    assert no_test["n_pairs"] == 0 and "pairs_note" in no_test and "model" not in no_test


def test_real_note_pairs_are_patient_disjoint(data_dir: Path) -> None:
    records = read_note_records(data_dir)
    pairs = note_pairs(records)
    assert_patient_disjoint(pairs)
    test = [p for p in pairs if p.split == "test"]
    assert test and len(pairs) > 100
    assert all(p.sentences and p.image.startswith(p.source + "/") for p in pairs)
    assert note_pairs(list(reversed(records))) == pairs
