"""crrg.metrics on small hand-checkable examples."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crrg.labels import FINDINGS
from crrg.metrics import (
    binary_metrics,
    chexpert_reference,
    clinical_scores,
    compute_classification,
    compute_clinical,
    compute_nlg,
    compute_nlg_detailed,
    label_matrix,
    masked_clinical_scores,
    roc_curve_png,
)

FAST = ("bleu", "rouge", "cider")  # no JVM
REFS = [
    "The heart is normal in size.",
    "There is a small left pleural effusion.",
    "No pneumothorax is seen.",
    "Mild pulmonary edema.",
]


# ------------------------------------------------------------------------------------------- NLG
def test_identical_corpora_score_one() -> None:
    scores = compute_nlg(REFS, list(REFS), metrics=FAST)
    assert list(scores) == ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"]
    for n in range(1, 5):
        assert scores[f"bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(1.0)
    assert scores["cider"] > 5.0  # CIDEr-D is scaled by 10; n-grams in every text get idf 0


def test_bleu_brevity_penalty_by_hand() -> None:
    # hypothesis = first 4 of the 5 reference tokens: every n-gram precision is 1 and
    # BLEU-n = BP = exp(1 - r / c) = exp(1 - 5 / 4) for every n
    scores = compute_nlg(["the heart is normal size"], ["the heart is normal"], metrics=("bleu",))
    for n in range(1, 5):
        assert scores[f"bleu_{n}"] == pytest.approx(math.exp(-0.25), abs=1e-6)


def test_rouge_l_by_hand() -> None:
    # LCS("mild cardiomegaly is present", "mild cardiomegaly noted") = 2 -> P = 2/4, R = 2/3,
    # ROUGE-L = (1 + b^2) P R / (R + b^2 P) with b = 1.2
    detail = compute_nlg_detailed(
        {"x": "mild cardiomegaly noted", "y": "no effusion"},
        {"x": "mild cardiomegaly is present", "y": "no effusion"},
        metrics=("rouge",),
    )
    p, r, b2 = 0.5, 2 / 3, 1.44
    expected_x = (1 + b2) * p * r / (r + b2 * p)
    assert detail.keys == ["x", "y"]
    assert detail.items["rouge_l"] == pytest.approx([expected_x, 1.0])
    assert detail.corpus["rouge_l"] == pytest.approx((expected_x + 1.0) / 2)


def test_rgrg_tokenization_splits_periods_and_multiple_references() -> None:
    # RGRG tokenization: "effusion." -> "effusion ." so the word matches the reference word
    with_period = compute_nlg(["small effusion"], ["small effusion."], metrics=("rouge",))
    untokenized = compute_nlg(["small effusion"], ["small effusion."], metrics=("rouge",),
                              tokenization="none")
    assert with_period["rouge_l"] > untokenized["rouge_l"]
    multi = compute_nlg([["heart normal", "the lungs are clear"]], ["the lungs are clear"],
                        metrics=("rouge",))
    assert multi["rouge_l"] == pytest.approx(1.0)  # best of several references


def test_nlg_input_errors() -> None:
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        compute_nlg(["a b", "c d"], ["a b"], metrics=FAST)
    with pytest.raises(ValueError, match="same keys"):
        compute_nlg({"a": "x y"}, {"b": "x y"}, metrics=FAST)
    with pytest.raises(ValueError, match="choose from"):
        compute_nlg(["a"], ["a"], metrics=("bleurt",))
    with pytest.raises(ValueError, match="tokenization"):
        compute_nlg(["a"], ["a"], metrics=FAST, tokenization="spacy")
    with pytest.raises(ValueError, match="at least one"):
        compute_nlg([], [], metrics=FAST)


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor_identical_vs_different_and_ptb() -> None:
    hyps = [REFS[0], REFS[1], "Bilateral hilar lymphadenopathy.", ""]
    detail = compute_nlg_detailed(REFS, hyps, metrics=("meteor",), tokenization="ptb")
    meteor = detail.items["meteor"]
    assert meteor[0] == pytest.approx(1.0, abs=1e-6) and meteor[1] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 <= meteor[2] < 0.3 and meteor[3] == 0.0
    assert 0.4 < detail.corpus["meteor"] < 0.8


@pytest.mark.skipif(shutil.which("java") is None, reason="PTB tokenizer needs Java")
def test_ptb_tokenization_lowercases_and_drops_punctuation() -> None:
    from crrg.metrics.nlg import _ptb_tokenize

    out = _ptb_tokenize({"0": ["The Heart, is NORMAL."], "1": ["No effusion;\nclear", "x-ray"]})
    assert out == {"0": ["the heart is normal"], "1": ["no effusion clear", "x-ray"]}


# ----------------------------------------------------------------------------- clinical efficacy
LABELS = ("cardiomegaly", "edema", "pneumothorax")


def _keyword_extractor(text: str) -> list[str]:
    """Tiny stand-in extractor: a label is positive when its name occurs, unless after 'no '."""
    text = text.lower()
    return [label for label in LABELS if label in text and f"no {label}" not in text]


def test_clinical_efficacy_by_hand() -> None:
    # gt:   r1 {cardiomegaly, edema}, r2 {edema},               r3 {}
    # pred: r1 {cardiomegaly},        r2 {edema, pneumothorax}, r3 {pneumothorax}
    # micro: TP 2, FP 2, FN 1 -> P 1/2, R 2/3, F1 4/7
    # per label: cardiomegaly 1/1/1, edema P 1 R 1/2 F1 2/3, pneumothorax 0/0/0 (no positives)
    # example-based: r1 P 1 R 1/2 F1 2/3; r2 P 1/2 R 1 F1 2/3; r3 P 0 R 0 F1 0
    generated = ["Cardiomegaly.", "Edema and a pneumothorax.", "Small pneumothorax."]
    references = [
        {"Cardiomegaly": 1, "Edema": 1.0, "Pneumothorax": 0},  # label dict (CheXpert style)
        ["edema"],  # collection of positive names
        "No pneumothorax. No edema.",  # text through the extractor
    ]
    ce = compute_clinical(generated, references, labels=LABELS, extractor=_keyword_extractor)
    assert ce["n_reports"] == 3
    assert ce["micro_precision"] == pytest.approx(1 / 2)
    assert ce["micro_recall"] == pytest.approx(2 / 3)
    assert ce["micro_f1"] == pytest.approx(4 / 7)
    assert ce["macro_precision"] == pytest.approx(2 / 3)
    assert ce["macro_recall"] == pytest.approx(1 / 2)
    assert ce["macro_f1"] == pytest.approx(5 / 9)
    assert ce["example_precision"] == pytest.approx(1 / 2)
    assert ce["example_recall"] == pytest.approx(1 / 2)
    assert ce["example_f1"] == pytest.approx(4 / 9)
    edema = ce["per_label"]["edema"]
    assert (edema["precision"], edema["recall"]) == (1.0, 0.5)
    assert (edema["support"], edema["predicted"]) == (2, 1)
    assert ce["per_label"]["pneumothorax"]["f1"] == 0.0


def test_label_matrix_values_and_errors() -> None:
    rows = label_matrix(
        [{"Pleural Effusion": -1, "edema": None, "cardiomegaly": float("nan"), "fracture": ""},
         {"pleural_effusion": -1, "Support Devices": True}],
        uncertain_positive=False,
    )
    assert rows.shape == (2, len(FINDINGS)) and rows.sum() == 1  # only support devices
    assert rows[1, FINDINGS.index("support devices")] == 1
    uncertain = label_matrix([{"Pleural Effusion": -1}], uncertain_positive=True)
    assert uncertain[0, FINDINGS.index("pleural effusion")] == 1
    subset = label_matrix([["edema", "fracture"]], labels=("edema",))  # known label ignored
    assert subset.tolist() == [[1]]
    with pytest.raises(ValueError, match="unknown finding label 'tumour'"):
        label_matrix([["tumour"]])
    with pytest.raises(ValueError, match="shape"):
        clinical_scores(np.zeros((2, 3)), np.zeros((2, 2)), LABELS)
    with pytest.raises(ValueError, match="2 generated but 1 references"):
        compute_clinical(["a", "b"], ["a"], extractor=_keyword_extractor)


def test_masked_scores_equal_sklearn_when_everything_is_assessed() -> None:
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.random((40, 3)) < 0.4, rng.random((40, 3)) < 0.4
    full = clinical_scores(y_true, y_pred, LABELS)
    masked = masked_clinical_scores(y_true, y_pred, np.ones_like(y_true), LABELS)
    for key in ("micro", "macro", "example"):
        for metric in ("precision", "recall", "f1"):
            assert masked[f"{key}_{metric}"] == pytest.approx(full[f"{key}_{metric}"]), (key, metric)
    assert masked["n_scored"] == 120


def test_unassessed_labels_are_skipped() -> None:
    # r1: pneumonia image (pneumonia 1, no finding 0; edema never assessed), report says edema +
    #     pneumonia -> edema not scored; TP pneumonia.  r2: normal image (all assessed 0), report
    #     says pneumonia -> FP.  r3: pneumonia image, report says nothing -> FN pneumonia.
    labels = ("no finding", "edema", "pneumonia")
    generated = [["edema", "pneumonia"], ["pneumonia"], ["no finding"]]
    references = [{"pneumonia": 1, "no finding": 0}, {"no finding": 1, "edema": 0, "pneumonia": 0},
                  {"pneumonia": 1, "no finding": 0, "edema": None}]
    ce = compute_clinical(generated, references, labels=labels, unassessed="skip")
    # micro over assessed pairs: TP 1 (r1 pneumonia), FP 2 (r2 pneumonia, r3 no finding), FN 2
    # (r2 no finding, r3 pneumonia) -> P 1/3, R 1/3, F1 1/3
    assert ce["micro_precision"] == pytest.approx(1 / 3) and ce["micro_recall"] == pytest.approx(1 / 3)
    assert ce["n_scored"] == 7 and ce["per_label"]["edema"]["assessed"] == 1
    assert ce["per_label"]["edema"]["predicted"] == 0  # r1's edema is not scored
    strict = compute_clinical(generated, references, labels=labels)  # the usual protocol
    assert strict["per_label"]["edema"]["predicted"] == 1 and strict["micro_precision"] == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="label dicts"):
        compute_clinical(["a"], ["pneumonia"], labels=labels, unassessed="skip", extractor=_keyword_extractor)
    with pytest.raises(ValueError, match="unassessed"):
        compute_clinical(["a"], [{}], unassessed="maybe", extractor=_keyword_extractor)


def test_chexpert_reference_maps_extra_labels() -> None:
    assert chexpert_reference({"covid-19": 1, "no finding": 0}) == {"no finding": 0, "pneumonia": 1}
    assert chexpert_reference({"covid-19": 0, "pneumonia": 1}) == {"pneumonia": 1}
    assert chexpert_reference({"nodule": 1, "lung lesion": 1}) == {"lung lesion": 1}
    assert chexpert_reference({"Nodule": 1.0}) == {"lung lesion": 1}


# -------------------------------------------------------------------------------- classification
def test_auc_perfect_reversed_and_accuracy() -> None:
    y = [0, 0, 1, 1, 0, 1]
    scores = np.array([0.1, 0.3, 0.7, 0.9, 0.2, 0.6])
    perfect = binary_metrics(y, scores)
    assert perfect == {"auc": 1.0, "accuracy": 1.0, "n": 6, "n_positive": 3}
    assert binary_metrics(y, 1 - scores)["auc"] == 0.0
    assert binary_metrics(y, scores, threshold=0.65)["accuracy"] == pytest.approx(5 / 6)
    one_class = binary_metrics([1, 1, 1], [0.2, 0.9, 0.4])
    assert math.isnan(one_class["auc"]) and one_class["accuracy"] == pytest.approx(1 / 3)


def test_compute_classification_tasks_and_missing_labels() -> None:
    y = np.array([[0, 1], [1, np.nan], [1, 0], [0, 1]])
    s = np.array([[0.2, 0.9], [0.8, 0.5], [0.6, 0.3], [0.4, 0.1]])
    res = compute_classification(y, s, task_names=["effusion", "edema"])
    effusion, edema = res["tasks"]["effusion"], res["tasks"]["edema"]
    assert effusion["auc"] == 1.0 and edema["n"] == 3
    assert edema["auc"] == pytest.approx(0.5)  # positives 0.9, 0.1 vs negative 0.3 -> 1 of 2 pairs
    assert res["mean_auc"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="equal shape"):
        compute_classification(y, s[:, 0])
    with pytest.raises(ValueError, match="0/1"):
        binary_metrics([0, 2], [0.1, 0.2])


def test_roc_curve_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = y * 0.5 + rng.random(200)
    path = roc_curve_png(y, s, tmp_path / "plots" / "roc.png", title="Cardiomegaly")
    assert path.stat().st_size > 5000
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width >= 400 and img.height >= 400
        assert np.asarray(img.convert("L")).std() > 10  # something is drawn
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_curve_png([1, 1], [0.3, 0.4], tmp_path / "x.png")


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor_jvm_failure_is_reported_and_cleaned_up() -> None:
    import gc

    from crrg.metrics.nlg import _meteor

    with pytest.raises(RuntimeError, match="METEOR"):
        with _meteor() as scorer:
            scorer.meteor_p.kill()  # the JVM dies mid-way: compute_score reads no number
            scorer.meteor_p.wait()
            scorer.compute_score({"0": ["a b"]}, {"0": ["a b"]})
    assert scorer.meteor_p.poll() is not None
    del scorer
    gc.collect()  # Meteor.__del__ takes its lock: must not deadlock after the failure
