"""The within-source validation gate (train.report_gate) and its application to a finished model
(train.gate_findings)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from crrg.calibration import Platt
from crrg.findings import ImageFindings, ImageFindingsConfig
from train.report_gate import MIN_REPORT_AUC, SourceScore, gate, gate_from_metrics, source_scores


def _confounded(rng: np.random.Generator, signal: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """JSRT (mostly positive, high scores) and NIH (mostly negative, low scores): within each
    source the score separates positives from negatives by ``signal``."""
    y, p, src = [], [], []
    for source, n_pos, n_neg, offset in (("jsrt_scr", 25, 10, 0.5), ("nih_cxr14", 10, 60, 0.0)):
        y += [1] * n_pos + [0] * n_neg
        p += list(offset + 0.3 * rng.random(n_pos) + signal) + list(offset + 0.3 * rng.random(n_neg))
        src += [source] * (n_pos + n_neg)
    return np.array(y), np.array(p), np.array(src)


def test_gate_drops_a_finding_that_only_tells_the_sources_apart() -> None:
    rng = np.random.default_rng(0)
    y, p, src = _confounded(rng, signal=0.0)
    assert roc_auc_score(y, p) >= MIN_REPORT_AUC  # pooled, the source alone looks like skill
    decision = gate("nodule", source_scores(y, p, src))
    assert not decision.kept and decision.auc < MIN_REPORT_AUC
    assert {s.source for s in decision.by_source} == {"jsrt_scr", "nih_cxr14"}
    assert "within-source" in decision.reason


def test_gate_keeps_a_finding_with_skill_inside_every_source() -> None:
    rng = np.random.default_rng(1)
    y, p, src = _confounded(rng, signal=0.25)
    decision = gate("nodule", source_scores(y, p, src))
    assert decision.kept and decision.auc >= MIN_REPORT_AUC
    assert decision.auc == min(s.auc for s in decision.by_source)


def test_gate_ignores_a_source_with_too_few_cases_and_refuses_with_none() -> None:
    few = SourceScore("jsrt_scr", n_positive=3, n_negative=20, auc=0.2)
    many = SourceScore("nih_cxr14", n_positive=12, n_negative=80, auc=0.8)
    assert gate("mass", [few, many]).kept  # JSRT's 3 positives say too little to veto
    alone = gate("mass", [few])
    assert not alone.kept and alone.auc is None and "no source" in alone.reason
    assert not gate("mass", [SourceScore("nih_cxr14", 10, 0, None)]).kept


def test_gate_from_an_evaluation_metrics_section() -> None:
    section = {"nodule": {"by_source": {"jsrt_scr": {"auc": 0.58, "n": 27, "n_positive": 18},
                                        "nih_cxr14": {"auc": 0.9, "n": 166, "n_positive": 12}}},
               "pleural effusion": {"by_source": {"nih_cxr14": {"auc": 0.81, "n": 166, "n_positive": 20}}}}
    decisions = gate_from_metrics(section, ["nodule", "pleural effusion", "edema"])
    assert not decisions["nodule"].kept and decisions["nodule"].auc == 0.58
    assert decisions["pleural effusion"].kept
    assert not decisions["edema"].kept  # not scored on validation: never stated
    assert json.loads(json.dumps(decisions["nodule"].to_json()))["by_source"]["jsrt_scr"]["n_negative"] == 9


def _model_with_image_head():
    from pipeline_fixture import tiny_model

    torch.manual_seed(0)
    model = tiny_model()
    config = ImageFindingsConfig(embed_dim=model.config.clip.embed_dim, feature_dim=model.config.detector.feature_dim,
                                 findings=("pneumonia", "pleural effusion", "nodule"))
    model.image_findings = ImageFindings(config).eval()
    model.config = dataclasses.replace(
        model.config, image_findings=config,
        grounding=dataclasses.replace(model.config.grounding,
                                      image_thresholds={"pneumonia": 0.5, "pleural effusion": 0.4, "nodule": 0.0}),
        calibration=dataclasses.replace(model.config.calibration, image_findings={
            "pleural effusion": Platt(2.0, -1.0), "nodule": Platt(1.0, 0.5)}))
    return model


def test_gated_model_no_longer_states_or_returns_the_dropped_finding(tmp_path: Path) -> None:
    from crrg.model import CRRGModel
    from crrg.pipeline import Pipeline
    from pipeline_fixture import chest_like_png
    from train.gate_findings import gate_model

    image = chest_like_png(tmp_path / "cxr.png")
    model = _model_with_image_head()
    before = Pipeline(model, device="cpu")(image)
    assert "nodule" in before.image_findings
    assert any(s.finding == "nodule" for s in before.sentences)  # threshold 0: always stated
    decisions = gate_from_metrics({"nodule": {"by_source": {"jsrt_scr": {"auc": 0.5, "n": 30, "n_positive": 20}}},
                                   "pleural effusion": {"by_source": {"nih_cxr14": {"auc": 0.8, "n": 60, "n_positive": 10}}}},
                                  ["pleural effusion", "nodule"])
    assert gate_model(model, decisions) == ("nodule",)
    model.save_pretrained(tmp_path / "gated")
    loaded = CRRGModel.from_pretrained(str(tmp_path / "gated"))
    assert loaded.config.image_findings.findings == ("pneumonia", "pleural effusion")
    assert "nodule" not in loaded.config.grounding.image_thresholds
    assert set(loaded.config.calibration.image_findings) == {"pleural effusion"}
    after = Pipeline(loaded, device="cpu")(image)
    assert set(after.image_findings) == {"pneumonia", "pleural effusion"}
    assert not any(s.finding == "nodule" for s in after.sentences)
    for name, p in after.image_findings.items():  # the kept outputs are the same (fp16 weights)
        assert abs(p - before.image_findings[name]) < 2e-2, name


def test_tune_grounding_keeps_sensitivity_and_cuts_clear_side_naming(tmp_path: Path) -> None:
    from train.tune_grounding import ShareResult, choose, main

    def metrics(boxed: float, clear: float, f1: float, split: str = "val") -> dict:
        return {"split": split, "grounding": {"tb_areas": {"named_in_a_boxed_zone": boxed,
                                                            "one_sided_also_named_on_clear_side": clear},
                                              "per_finding": {"opacity": {"f1": f1}}}}

    grid = {0.0: metrics(0.86, 0.74, 0.93), 0.6: metrics(0.85, 0.66, 0.93),
            0.8: metrics(0.84, 0.57, 0.91), 0.9: metrics(0.78, 0.51, 0.90)}
    results = [ShareResult.from_metrics(s, m) for s, m in grid.items()]
    assert choose(results, 0.03).share == 0.8  # 0.9 loses 8 points of the boxed-zone rate
    assert choose(results, 0.1).share == 0.9
    runs = []
    for share, m in grid.items():
        (tmp_path / f"{share}.json").write_text(json.dumps(m))
        runs.append(f"{share}={tmp_path / f'{share}.json'}")
    main(["--runs", *runs, "--out", str(tmp_path / "tuning.json")])
    assert json.loads((tmp_path / "tuning.json").read_text())["chosen"] == 0.8
    import pytest

    with pytest.raises(ValueError, match="tune on 'val'"):
        ShareResult.from_metrics(0.5, metrics(0.8, 0.5, 0.9, split="test"))
    with pytest.raises(ValueError, match="share 0"):
        choose(results[1:], 0.03)
