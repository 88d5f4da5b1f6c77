"""Model card metadata: save_pretrained -> README.md front matter -> ModelCard.load, and the
shipped card's model-index against its metrics.json (so the two cannot drift apart)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import ModelCard

from crrg import card
from crrg.model import CRRGModel
from pipeline_fixture import tiny_model

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "assets" / "crrg-default"

METRICS: dict[str, Any] = {
    "split": "test",
    "detector": {"mask_backed": {"mean_iou": 0.61234, "iou_50": 0.75, "detection_rate": 1.0}},
    "abnormality": {"pooled_detected": {"auc": 0.8}, "image_level": {"auc": None}},  # null: left out
    "zero_shot": {"pneumonia_vs_normal": {"auc": 0.912345, "accuracy": 0.5, "source": "kermany_pneumonia",
                                          "label": "pneumonia"}},
    "reports": {"micro_precision": 0.25, "micro_recall": 0.5, "micro_f1": 1 / 3,
                "all_findings": {"micro_f1": 0.125}},
    "nlg": {"skipped": True, "note": "no pairs"},
}
# (task type, dataset type, dataset config, split, metric type, metric name, value), card order.
EXPECTED = [
    ("object-detection", "crrg-silver-boxes", "mask-backed", "test", "mean_iou", "Mean IoU (mask-backed boxes)", 0.6123),
    ("object-detection", "crrg-silver-boxes", "mask-backed", "test", "iou_50", "Boxes with IoU >= 0.5", 0.75),
    ("object-detection", "crrg-silver-boxes", "mask-backed", "test", "detection_rate", "Detection rate", 1.0),
    ("image-classification", "crrg-open-cxr", "abnormality", "test", "roc_auc",
     "Region abnormality AUC (detected regions)", 0.8),
    ("zero-shot-image-classification", "kermany-pneumonia", "pneumonia_vs_normal", "test", "roc_auc", "AUC", 0.9123),
    ("zero-shot-image-classification", "kermany-pneumonia", "pneumonia_vs_normal", "test", "accuracy", "Accuracy", 0.5),
    ("image-to-text", "crrg-open-cxr", "ce-assessed-labels", "test", "precision",
     "CE micro precision (CheXpert 14, assessed labels)", 0.25),
    ("image-to-text", "crrg-open-cxr", "ce-assessed-labels", "test", "recall",
     "CE micro recall (CheXpert 14, assessed labels)", 0.5),
    ("image-to-text", "crrg-open-cxr", "ce-assessed-labels", "test", "f1",
     "CE micro F1 (CheXpert 14, assessed labels)", 0.3333),
    ("image-to-text", "crrg-open-cxr", "ce-all-findings", "test", "f1", "CE micro F1 (16 findings, strict)", 0.125),
]


def _rows(loaded: ModelCard) -> list[tuple]:
    return [(r.task_type, r.dataset_type, r.dataset_config, r.dataset_split, r.metric_type, r.metric_name,
             r.metric_value) for r in loaded.data.eval_results or []]


def _assert_hub_metadata(loaded: ModelCard, folder: Path) -> None:
    data = loaded.data
    assert data.library_name == "crrg" and data.pipeline_tag == "image-to-text"
    assert data.license == "other" and data.license_name == "mixed-research-only"
    assert (folder / data.license_link).is_file(), "license_link must name a file in the model folder"
    assert "research-only" in data.tags
    # The front matter survives a render -> parse cycle unchanged.
    assert ModelCard(loaded.content).data.to_dict() == data.to_dict()


def test_save_pretrained_writes_eval_results_from_metrics(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    tiny_model().save_pretrained(folder, metrics=METRICS)
    loaded = ModelCard.load(folder / "README.md")
    assert _rows(loaded) == EXPECTED
    assert all(isinstance(r.metric_value, float) for r in loaded.data.eval_results)
    assert loaded.data.model_name == "crrg-tiny"
    _assert_hub_metadata(loaded, folder)
    assert json.loads((folder / "metrics.json").read_text()) == METRICS
    assert "Research use only" in loaded.text and "LICENSE.md" in loaded.text
    assert CRRGModel.from_pretrained(str(folder)).config.variant == "tiny"


def test_metrics_json_already_in_the_folder_is_used(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(METRICS))
    tiny_model().save_pretrained(folder)
    assert _rows(ModelCard.load(folder / "README.md")) == EXPECTED


def test_without_metrics_the_card_has_no_model_index(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    tiny_model().save_pretrained(folder)
    loaded = ModelCard.load(folder / "README.md")
    assert loaded.data.eval_results is None and "model-index" not in loaded.data.to_dict()
    assert not (folder / "metrics.json").exists()
    _assert_hub_metadata(loaded, folder)


def test_existing_card_keeps_its_body_and_gets_fresh_front_matter(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    body = "\n# My hand-written card\n\nKeep *every* word.\n"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: mit\ntags:\n- mine\nbase_model: org/other\n---\n" + body)
    stale = copy.deepcopy(METRICS)
    stale["reports"]["micro_f1"] = 0.99
    tiny_model().save_pretrained(folder, metrics=stale)
    first = ModelCard.load(folder / "README.md")
    assert first.text == body
    assert first.data.license == "other" and first.data.base_model == "org/other"
    assert first.data.tags[0] == "mine" and "chest-x-ray" in first.data.tags
    # Re-saving with new metrics replaces the numbers; nothing else moves.
    tiny_model().save_pretrained(folder, metrics=METRICS)
    second = ModelCard.load(folder / "README.md")
    assert second.text == body and _rows(second) == EXPECTED
    assert second.data.tags == first.data.tags


def test_update_card_cli_copies_metrics_and_keeps_body(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    tiny_model().save_pretrained(folder)
    (folder / "README.md").write_text("---\nlibrary_name: crrg\n---\nbody\n")
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    card.main([str(folder), "--metrics", str(tmp_path / "metrics.json")])
    loaded = ModelCard.load(folder / "README.md")
    assert loaded.text == "body\n" and _rows(loaded) == EXPECTED
    assert json.loads((folder / "metrics.json").read_text()) == METRICS
    with pytest.raises(FileNotFoundError, match="README.md"):
        card.update_card(tmp_path / "empty")


def test_push_to_hub_uploads_card_metrics_and_licence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uploaded: dict[str, str] = {}

    class FakeApi:
        def __init__(self, token: str | None = None) -> None:
            pass

        def create_repo(self, repo_id: str, **kwargs: Any) -> Any:
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, *, repo_id: str, folder_path: Path, **kwargs: Any) -> str:
            uploaded.update({p.name: p.read_text(errors="replace") for p in Path(folder_path).iterdir()})
            return f"https://hub/{repo_id}"

    monkeypatch.setattr("huggingface_hub.hub_mixin.HfApi", FakeApi)
    url = tiny_model().push_to_hub("org/tiny", model_card_kwargs={"metrics": METRICS})
    assert url == "https://hub/org/tiny"
    assert {"README.md", "LICENSE.md", "metrics.json", "config.json", "model.safetensors"} <= set(uploaded)
    assert _rows(ModelCard(uploaded["README.md"])) == EXPECTED
    assert json.loads(uploaded["metrics.json"]) == METRICS


def test_nlg_metrics_become_eval_results_when_computed() -> None:
    metrics = METRICS | {"nlg": {"n": 10, "by_source": {"iu_xray": 10}, "bleu_1": 0.3, "bleu_4": 0.1,
                                 "rouge_l": 0.25, "cider": 0.4}}
    rows = [(r.task_type, r.dataset_type, r.metric_type, r.metric_name, r.metric_value, r.metric_args)
            for r in card.eval_results(metrics) if r.dataset_config == "nlg"]
    assert rows == [("image-to-text", "iu-xray", "bleu", "BLEU-1", 0.3, {"max_order": 1}),
                    ("image-to-text", "iu-xray", "bleu", "BLEU-4", 0.1, {"max_order": 4}),
                    ("image-to-text", "iu-xray", "rouge", "ROUGE-L", 0.25, None),
                    ("image-to-text", "iu-xray", "cider", "CIDEr-D", 0.4, None)]


def test_shipped_card_eval_results_equal_its_metrics_json() -> None:
    loaded = ModelCard.load(SHIPPED / "README.md")
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    _assert_hub_metadata(loaded, SHIPPED)
    assert loaded.data.model_name == "crrg-default"
    assert loaded.data.datasets == list(card.DATASETS)
    # Every result is what crrg.card derives from metrics.json today ...
    assert loaded.data.eval_results == card.eval_results(metrics)
    # ... and the headline numbers are the metrics.json values, looked up independently here.
    by_name = {(r.dataset_config, r.metric_name): r.metric_value for r in loaded.data.eval_results}
    assert {r.dataset_split for r in loaded.data.eval_results} == {"test"} and metrics["split"] == "test"
    headline = {
        ("mask-backed", "Mean IoU (mask-backed boxes)"): metrics["detector"]["mask_backed"]["mean_iou"],
        ("abnormality", "Region abnormality AUC (detected regions)"): metrics["abnormality"]["pooled_detected"]["auc"],
        ("abnormality", "Image abnormality AUC (max over regions)"): metrics["abnormality"]["image_level"]["auc"],
        ("pneumonia_vs_normal", "AUC"): metrics["zero_shot"]["pneumonia_vs_normal"]["auc"],
        ("covid-19_vs_normal", "AUC"): metrics["zero_shot"]["covid-19_vs_normal"]["auc"],
        ("nodule_vs_none", "AUC"): metrics["zero_shot"]["nodule_vs_none"]["auc"],
        ("ce-assessed-labels", "CE micro F1 (CheXpert 14, assessed labels)"): metrics["reports"]["micro_f1"],
        ("ce-all-findings", "CE micro F1 (16 findings, strict)"): metrics["reports"]["all_findings"]["micro_f1"],
    }
    for key, value in headline.items():
        assert by_name[key] == round(value, card.DIGITS), key
    assert by_name[("ce-assessed-labels", "CE micro F1 (CheXpert 14, assessed labels)")] == 0.7351  # the card's figure
    grounding = metrics["grounding"]
    assert by_name[("grounding", "Share of sentences naming a location without evidence")] == 0.0
    assert by_name[("grounding", "Finding macro F1 (stated vs region-level truth)")] == round(grounding["macro_f1"], card.DIGITS)
    assert by_name[("cardiothoracic-ratio", "CTR mean absolute error vs masks")] == round(
        metrics["measurements"]["cardiothoracic_ratio"]["mae"], card.DIGITS)
    assert by_name[("input-check", "Non-radiograph inputs flagged")] == round(
        metrics["input_check"]["test"]["negatives_flagged"], card.DIGITS)
    goal = metrics["input_check"].get("goal")
    if goal is not None:  # the refuse / warn / accept figures of #18
        assert by_name[("input-check-states", "Real radiographs refused")] == round(
            goal["test_real_radiographs_refused"], card.DIGITS)
        assert by_name[("input-check-states", "Rotated films refused")] == round(
            goal["test_rotated_refused"], card.DIGITS)
    assert by_name[("note-pairs", "ROUGE-L")] == round(metrics["nlg"]["model"]["rouge_l"], card.DIGITS)
    # The hand-written body survived the generated front matter.
    assert "## Limitations" in loaded.text and "## Upload to the hub" in loaded.text


def test_a_missing_metric_is_an_error_not_a_gap() -> None:
    for path in (("detector", "mask_backed", "iou_50"), ("zero_shot", "pneumonia_vs_normal", "accuracy"),
                 ("reports", "all_findings"), ("abnormality",)):
        broken = copy.deepcopy(METRICS)
        parent = broken
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
        with pytest.raises(card.MissingMetric, match=".".join(path)):
            card.eval_results(broken)
    partial = copy.deepcopy(METRICS) | {"grounding": {"macro_f1": 0.5}}  # a section present in part
    with pytest.raises(card.MissingMetric, match="grounding.unsupported_share"):
        card.eval_results(partial)
    # a null figure is undefined, not missing: left off the card
    assert all(r.metric_name != "Image abnormality AUC (max over regions)" for r in card.eval_results(METRICS))


def test_the_card_does_not_import_the_model() -> None:
    import ast

    tree = ast.parse(Path(card.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(name and name.startswith("crrg") for name in imported)


def test_input_check_refuse_warn_figures_join_the_card_when_measured() -> None:
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    metrics["input_check"] = {k: v for k, v in metrics["input_check"].items() if k != "goal"}
    before = card.eval_results(metrics)
    goal = {"test_real_radiographs_refused": 0.0018, "test_real_radiographs_warned": 0.0055,
            "test_inverted_refused": 1.0, "test_rotated_refused": 0.98, "held_out_kind_refused_min": 0.74}
    metrics["input_check"] = {**metrics["input_check"], "goal": goal}
    after = {(r.dataset_config, r.metric_name): r.metric_value for r in card.eval_results(metrics)}
    assert len(after) == len(before) + 5
    assert after[("input-check-states", "Real radiographs refused")] == 0.0018
    assert after[("input-check-states", "Real radiographs warned (reported with a note)")] == 0.0055
    assert after[("input-check-states", "Least-refused kind when left out of training")] == 0.74
