"""The evidence heads: shapes, the region mask, fitting on cached features (loss falls), the
image-level input pooling, thresholds, and assembling them into a saved model that loads."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from crrg.calibration import Calibration, Platt
from crrg.classifier import ClassifierConfig

from crrg.findings import (
    FINDING_REGIONS,
    POOL_REGIONS,
    REGION_FINDINGS,
    ImageFindings,
    ImageFindingsConfig,
    RegionFindings,
    RegionFindingsConfig,
    pooled_inputs,
)
from crrg.regions import NUM_REGIONS, REGION_INDEX
from train.fit_heads import HeadFitConfig, fit, masked_bce
from train.report_gate import MIN_REPORT_AUC
from train.train_heads import binary_scores, finding_threshold, youden_threshold


def test_region_findings_only_score_regions_that_can_carry_the_finding() -> None:
    head = RegionFindings(RegionFindingsConfig(feature_dim=8, crop_dim=4, hidden_dim=6))
    logits = head(torch.randn(2, NUM_REGIONS, 8), torch.randn(2, NUM_REGIONS, 4))
    assert logits.shape == (2, NUM_REGIONS, len(REGION_FINDINGS))
    for j, finding in enumerate(REGION_FINDINGS):
        allowed = {REGION_INDEX[r] for r in FINDING_REGIONS[finding]}
        for i in range(NUM_REGIONS):
            assert torch.isfinite(logits[:, i, j]).all() == (i in allowed)


def test_pooled_inputs_average_only_detected_lung_regions() -> None:
    fused = torch.zeros(1, NUM_REGIONS, 2)
    detected = torch.zeros(1, NUM_REGIONS, dtype=torch.bool)
    for value, region in enumerate(POOL_REGIONS[:2], start=1):
        fused[0, REGION_INDEX[region]] = float(value)
        detected[0, REGION_INDEX[region]] = True
    fused[0, REGION_INDEX["spine"]] = 100.0  # not a lung region: ignored
    detected[0, REGION_INDEX["spine"]] = True
    out = pooled_inputs(("lung_fused",), torch.zeros(1, 3), fused, torch.zeros(1, NUM_REGIONS, 3), detected)
    assert torch.allclose(out, torch.tensor([[1.5, 1.5]]))


def test_fit_lowers_the_masked_loss_on_a_learnable_task() -> None:
    torch.manual_seed(0)
    n, d = 256, 8
    fused = torch.randn(n, NUM_REGIONS, d)
    crops = torch.randn(n, NUM_REGIONS, 4)
    target = (fused[..., :1] > 0.5).float().expand(n, NUM_REGIONS, len(REGION_FINDINGS)).contiguous()
    known = torch.rand(n, NUM_REGIONS, len(REGION_FINDINGS)) > 0.3
    head = RegionFindings(RegionFindingsConfig(feature_dim=d, crop_dim=4, hidden_dim=16))
    idx = torch.arange(n)

    def forward(m, i):
        return m(fused[i], crops[i])

    with torch.no_grad():
        before = float(masked_bce(forward(head, idx), target[idx], known[idx]))
    head, stats = fit(head, forward, idx[:200], idx[200:], target, known, HeadFitConfig(epochs=30, batch_size=32, lr=5e-3))
    with torch.no_grad():
        after = float(masked_bce(forward(head, idx[200:]), target[200:], known[200:]))
    assert stats["last_train_loss"] < stats["first_train_loss"]
    assert after < before * 0.7


def test_thresholds_and_binary_scores_on_known_inputs() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.5, 0.7, 0.9])
    assert youden_threshold(y, p) == 0.7 or youden_threshold(y, p) == 0.5
    s = binary_scores(y, p, 0.5)
    assert s["sensitivity"] == 1.0 and abs(s["specificity"] - 2 / 3) < 1e-9 and s["n"] == 6
    # nodule: the lowest threshold with <= 10 % of negative images over it
    probs = np.zeros((20, NUM_REGIONS))
    probs[:, 0] = np.linspace(0.0, 0.95, 20)
    has = np.zeros(20, bool)
    known = np.ones(20, bool)
    t = finding_threshold("nodule", probs, np.zeros_like(probs), np.ones_like(probs, bool), has, known)
    assert (probs.max(1) >= t).mean() <= 0.10 and (probs.max(1) >= t - 0.01).mean() > 0.10


def test_subset_cuts_a_head_to_the_named_findings() -> None:
    torch.manual_seed(0)
    full = ImageFindings(ImageFindingsConfig(embed_dim=8, inputs=("embedding",), findings=("pneumonia", "edema", "mass"))).eval()
    cut = full.subset(("pneumonia", "mass"))
    x = torch.randn(5, 8)
    assert cut.config.findings == ("pneumonia", "mass")
    assert torch.allclose(cut(x), full(x)[:, [0, 2]])


def test_assembled_heads_save_and_load(tmp_path: Path) -> None:
    from crrg.model import CRRGModel
    from pipeline_fixture import tiny_model
    from train.assemble import attach_heads

    model = tiny_model()
    d = model.config.detector.feature_dim
    e = model.config.clip.embed_dim
    findings = RegionFindings(RegionFindingsConfig(feature_dim=d, crop_dim=e, hidden_dim=8))
    image = ImageFindings(ImageFindingsConfig(embed_dim=e, feature_dim=d))
    heads = tmp_path / "heads"
    heads.mkdir()
    torch.save({"findings": findings.state_dict(), "findings_config": asdict(findings.config),
                "image_findings": image.state_dict(), "image_findings_config": asdict(image.config),
                "abnormality": model.abnormality.state_dict()}, heads / "heads.pt")
    (heads / "grounding.json").write_text(json.dumps({"region_thresholds": {"nodule": 0.3},
                                                      "image_thresholds": {"pneumonia": 0.6}}))
    (heads / "calibration.json").write_text(json.dumps({"image.pneumonia": {"a": 2.0, "b": -1.0}}))
    attach_heads(model, heads)
    model.save_pretrained(tmp_path / "out")
    loaded = CRRGModel.from_pretrained(str(tmp_path / "out"))
    assert loaded.config.grounding.region_thresholds == {"nodule": 0.3}
    assert loaded.config.calibration == Calibration(image_findings={"pneumonia": Platt(2.0, -1.0)})
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["calibration"] == {"image.pneumonia": {"a": 2.0, "b": -1.0}}  # the flat layout
    assert loaded.findings is not None and loaded.image_findings is not None
    for (k, v), w in zip(findings.state_dict().items(), loaded.findings.state_dict().values()):
        assert torch.allclose(v.float(), w.float(), atol=1e-2), k


def _synthetic_data(n_per: int = 40):
    from train.heads_data import HeadData

    from train.heads_data import IMAGE_EXTRA

    rows, y = [], []
    for source in ("covid_radiography", "kermany_pneumonia", "jsrt_scr", "nih_cxr14"):
        for i in range(n_per):
            split = ("train", "val", "test")[i % 3]
            label = int(i % 2 == 0) if source != "jsrt_scr" else 0
            rows.append({"image": f"{source}/{i}.jpg", "source": source, "split": split})
            y.append(label)
    n = len(rows)
    g = torch.Generator().manual_seed(0)
    y_t = torch.tensor(y, dtype=torch.float32)
    emb = torch.randn(n, 8, generator=g) + y_t[:, None]  # learnable from the embedding
    # NIH rows assess the extra findings: "pleural effusion" follows the (learnable) label, "edema"
    # is known on too few validation images to be judged, the rest are unknown
    nih = torch.tensor([r["source"] == "nih_cxr14" for r in rows])
    extra, extra_known = torch.zeros(n, len(IMAGE_EXTRA)), torch.zeros(n, len(IMAGE_EXTRA), dtype=torch.bool)
    effusion, edema = list(IMAGE_EXTRA).index("pleural effusion"), list(IMAGE_EXTRA).index("edema")
    extra[:, effusion], extra_known[:, effusion] = y_t, nih
    extra_known[:, edema] = nih & (torch.arange(n) % 9 == 0)
    return HeadData(keys=[r["image"] for r in rows], rows=rows, fused=torch.randn(n, NUM_REGIONS, 4, generator=g),
                    crops=torch.randn(n, NUM_REGIONS, 8, generator=g), embedding=emb,
                    detected=torch.ones(n, NUM_REGIONS, dtype=torch.bool), boxes=torch.zeros(n, NUM_REGIONS, 4),
                    findings=torch.zeros(n, NUM_REGIONS, 3), findings_known=torch.zeros(n, NUM_REGIONS, 3, dtype=torch.bool),
                    abnormality=torch.zeros(n, NUM_REGIONS), abnormality_known=torch.zeros(n, NUM_REGIONS, dtype=torch.bool),
                    image=y_t, image_known=torch.ones(n, dtype=torch.bool), extra=extra, extra_known=extra_known)


def test_leave_one_source_out_never_trains_or_thresholds_on_the_held_out_source(monkeypatch) -> None:
    import train.train_heads as th

    data = _synthetic_data()
    seen = []
    real = th.train_image_head

    def spy(data_, inputs, train, val, balance):
        seen.append(({data_.rows[i]["source"] for i in train.tolist()},
                     {data_.rows[i]["source"] for i in val.tolist()}))
        return real(data_, inputs, train, val, balance)

    monkeypatch.setattr(th, "train_image_head", spy)
    monkeypatch.setattr(th, "ImageFindingsConfig",
                        lambda **kw: ImageFindingsConfig(embed_dim=8, feature_dim=4, **kw))
    out = th.loso(data, ("embedding",), False)["test"]
    assert [held for held in th.LOSO_SOURCES] == [k for k in out if k != "mean_balanced_accuracy"]
    for held, (train_sources, val_sources) in zip(th.LOSO_SOURCES, seen):
        assert held not in train_sources and held not in val_sources
        assert train_sources and val_sources
    for held in th.LOSO_SOURCES:
        assert out[held]["n"] == sum(1 for r in data.rows if r["source"] == held and r["split"] == "test")
        assert 0.0 <= out[held]["sensitivity"] <= 1.0 and 0.0 <= out[held]["specificity"] <= 1.0


def test_heads_steps_write_a_calibration_the_model_reads(monkeypatch, tmp_path: Path) -> None:
    """The steps of train.train_heads.main on synthetic cached features: every variant scored
    under its frozen-dataclass key, thresholds per finding, and calibration.json in the layout
    Calibration reads back (train.assemble -> config.json)."""
    import dataclasses

    import train.train_heads as th

    data = _synthetic_data()
    g = torch.Generator().manual_seed(1)
    known = torch.ones_like(data.findings_known)
    findings = (torch.rand(data.findings.shape, generator=g) < 0.2).float()
    data = dataclasses.replace(data, findings=findings, findings_known=known,
                               abnormality=(torch.rand(data.abnormality.shape, generator=g) < 0.3).float(),
                               abnormality_known=torch.ones_like(data.abnormality_known))
    monkeypatch.setattr(th, "ImageFindingsConfig",
                        lambda **kw: ImageFindingsConfig(embed_dim=8, feature_dim=4, **kw))
    monkeypatch.setattr(th, "RegionFindingsConfig",
                        lambda findings: RegionFindingsConfig(feature_dim=4, crop_dim=8, hidden_dim=6, findings=findings))
    monkeypatch.setattr(th, "ClassifierConfig", lambda: ClassifierConfig(feature_dim=4, hidden_dim=6))
    monkeypatch.setattr(th, "INPUT_CHOICES", {"whole_image": ("embedding",)})
    outcome = th.HeadsOutcome()
    th.image_level_step(data, None, outcome)
    th.region_findings_step(data, outcome)
    th.abnormality_step(data, outcome)
    th.write_outcome(tmp_path, outcome)
    assert set(outcome.metrics["image_level"]["variants"]) == {"whole_image", "whole_image+balanced"}
    assert set(outcome.region_thresholds) == set(REGION_FINDINGS)
    stored = json.loads((tmp_path / "calibration.json").read_text())
    assert set(stored) == {"abnormality", "image.pneumonia", "image.pleural effusion",
                           *(f"findings.{f}" for f in REGION_FINDINGS)}
    extra = outcome.metrics["image_level"]["extra_findings"]
    assert extra["pleural effusion"]["kept"] and extra["pleural effusion"]["val_auc"] >= MIN_REPORT_AUC
    assert not extra["edema"]["kept"] and "val positives" in extra["edema"]["reason"]
    assert set(json.loads((tmp_path / "grounding.json").read_text())["image_thresholds"]) >= {
        "pneumonia", "pleural effusion"}
    shipped = outcome.heads["image_findings_config"]["findings"]
    assert tuple(shipped) == ("pneumonia", "pleural effusion")
    assert Calibration.from_json(stored) == outcome.calibration
    assert set(json.loads((tmp_path / "metrics.json").read_text())["calibration"]) == set(stored)
