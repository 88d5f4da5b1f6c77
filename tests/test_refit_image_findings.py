"""Cross-source firing: co-occurrence priors (train.heads_data), the firing gate
(train.report_gate.firing_check) and the refit of a finished model's image-level findings
(train.refit_image_findings)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from crrg.findings import ImageFindings, ImageFindingsConfig
from crrg.regions import NUM_REGIONS
from train.fit_heads import HeadFitConfig
from train.heads_data import IMAGE_EXTRA, HeadData, cooccurrence_priors, prior_targets, unassessed_pneumonia
from train.report_gate import MAX_EXCESS_FIRING, MIN_VAL_CASES, firing_check

PTX = list(IMAGE_EXTRA).index("pneumothorax")


def _extrapolating_data(n_per: int = 240, seed: int = 0) -> HeadData:
    """NIH films: pneumonia-like on half, pneumothorax on a quarter of the pneumonia-like films and half the others,
    readable from embedding dim 1. Kermany films: pneumonia-like on half; their pneumonia films
    also push dim 1 up (what an NIH-only head extrapolates from), and dim 2 says "Kermany"."""
    rng = np.random.default_rng(seed)
    rows, image, ptx, emb = [], [], [], []
    for source in ("nih_cxr14", "kermany_pneumonia"):
        for i in range(n_per):
            pneumonia = int(i % 2 == 0)
            has_ptx = int(source == "nih_cxr14" and i % 8 in (1, 3, 4))
            e = rng.normal(0, 0.3, 16)
            e[0] += 2 * pneumonia
            e[1] += 2 * has_ptx + (3 * pneumonia if source == "kermany_pneumonia" else 0)
            e[2] += 2 * (source == "kermany_pneumonia")
            rows.append({"image": f"{source}/{i}.png", "source": source, "split": ("train", "val", "test")[i % 3],
                         "labels": {"pneumonia": pneumonia}})
            image.append(pneumonia)
            ptx.append(has_ptx)
            emb.append(e)
    n = len(rows)
    nih = torch.tensor([r["source"] == "nih_cxr14" for r in rows])
    extra = torch.zeros(n, len(IMAGE_EXTRA))
    extra_known = torch.zeros(n, len(IMAGE_EXTRA), dtype=torch.bool)
    extra[:, PTX], extra_known[:, PTX] = torch.tensor(ptx, dtype=torch.float32), nih
    return HeadData(keys=[r["image"] for r in rows], rows=rows,
                    fused=torch.zeros(n, NUM_REGIONS, 4), crops=torch.zeros(n, NUM_REGIONS, 16),
                    embedding=torch.tensor(np.array(emb), dtype=torch.float32),
                    detected=torch.ones(n, NUM_REGIONS, dtype=torch.bool), boxes=torch.zeros(n, NUM_REGIONS, 4),
                    findings=torch.zeros(n, NUM_REGIONS, 3), findings_known=torch.zeros(n, NUM_REGIONS, 3, dtype=torch.bool),
                    abnormality=torch.zeros(n, NUM_REGIONS), abnormality_known=torch.zeros(n, NUM_REGIONS, dtype=torch.bool),
                    image=torch.tensor(image, dtype=torch.float32), image_known=torch.ones(n, dtype=torch.bool),
                    extra=extra, extra_known=extra_known)


def _base_head() -> ImageFindings:
    torch.manual_seed(0)
    return ImageFindings(ImageFindingsConfig(embed_dim=16, inputs=("embedding",),
                                             findings=("pneumonia", "pneumothorax"))).eval()


def test_cooccurrence_prior_and_soft_targets_on_unassessed_pneumonia_films() -> None:
    data = _extrapolating_data()
    priors = cooccurrence_priors(data)
    train_nih_pneumonia = [i for i, r in enumerate(data.rows)
                           if r["split"] == "train" and r["source"] == "nih_cxr14" and data.image[i] == 1]
    assert priors[PTX] == data.extra[train_nih_pneumonia, PTX].mean()
    assert 0.15 < float(priors[PTX]) < 0.35
    assert float(priors[list(IMAGE_EXTRA).index("edema")]) == 0.0  # no NIH film knows it here
    soft = unassessed_pneumonia(data)[:, PTX]
    kermany_pneumonia = torch.tensor([r["source"] == "kermany_pneumonia" and data.image[i] == 1
                                      for i, r in enumerate(data.rows)])
    assert torch.equal(soft, kermany_pneumonia)
    target, known = prior_targets(data, priors)
    assert torch.equal(known[:, PTX], data.extra_known[:, PTX] | kermany_pneumonia)
    assert torch.all(target[kermany_pneumonia, PTX] == priors[PTX])
    nih = data.extra_known[:, PTX]
    assert torch.equal(target[nih, PTX], data.extra[nih, PTX])  # labels stay labels
    assert not bool(known[~kermany_pneumonia & ~nih, PTX].any())  # Kermany normals stay unknown


def test_firing_check_bounds_the_rate_above_the_prior() -> None:
    ok = firing_check("pneumothorax", np.array([True] * 2 + [False] * 18), prior=0.02)
    assert ok.rate == 0.1 and ok.ok and ok.bound == 0.02 + MAX_EXCESS_FIRING
    bad = firing_check("pneumothorax", np.array([True] * 15 + [False] * 5), prior=0.02)
    assert not bad.ok and bad.to_json()["stated"] == 15
    few = firing_check("pneumothorax", np.array([True] * (MIN_VAL_CASES - 1)), prior=0.0)
    assert few.ok  # too few films to judge


def test_refit_with_priors_stops_the_extrapolation_and_keeps_the_primary_output() -> None:
    from train.refit_image_findings import PRIMARY, refit_head

    data = _extrapolating_data()
    base = _base_head()
    cfg = HeadFitConfig(epochs=60, lr=0.02, balance_sources=True)  # a few hundred steps on the small set
    head_off, outcome_off, kept_off = refit_head(data, base, priors=False, fit_config=cfg)
    head_on, outcome_on, kept_on = refit_head(data, base, priors=True, fit_config=cfg)
    off = outcome_off.metrics["extra_findings"]["pneumothorax"]
    on = outcome_on.metrics["extra_findings"]["pneumothorax"]
    assert off["val_auc"] > 0.9 and on["val_auc"] > 0.9  # within NIH, both rank it
    # labels only: the head fires on Kermany pneumonia films, so its threshold is raised far above
    # the 95 %-specific one and it states the finding on fewer NIH positives
    assert off["threshold"] > off["specificity_threshold"]
    assert on["firing_elsewhere"]["ok"] and "pneumothorax" in kept_on
    assert on["val"]["sensitivity"] > off["val"]["sensitivity"]
    x = data.embedding
    with torch.no_grad():
        for head in (head_off, head_on):  # the primary row and the input norm are the base's
            assert torch.allclose(head(x)[:, 0], base(x)[:, head.config.findings.index(PRIMARY)], atol=1e-6, rtol=0)


def test_apply_refit_ships_the_kept_rows_with_their_thresholds(tmp_path: Path) -> None:
    from crrg.model import CRRGModel
    from pipeline_fixture import tiny_model
    from train.refit_image_findings import apply_refit
    from train.image_level import HeadsOutcome
    from crrg.calibration import Platt

    model = tiny_model()
    config = ImageFindingsConfig(embed_dim=model.config.clip.embed_dim, feature_dim=model.config.detector.feature_dim,
                                 findings=("pneumonia", "mass"))
    model.image_findings = ImageFindings(config).eval()
    model.config = dataclasses.replace(
        model.config, image_findings=config,
        grounding=dataclasses.replace(model.config.grounding, image_thresholds={"pneumonia": 0.6, "mass": 0.3}),
        calibration=dataclasses.replace(model.config.calibration, image_findings={"pneumonia": Platt(1.5, 0.1),
                                                                                   "mass": Platt(1.0, 0.0)}))
    refit = ImageFindings(dataclasses.replace(config, findings=("pneumonia", "pleural effusion", "mass"))).eval()
    outcome = HeadsOutcome(image_thresholds={"pleural effusion": 0.2, "mass": 0.9})
    outcome.calibration = dataclasses.replace(outcome.calibration, image_findings={"pleural effusion": Platt(2.0, -1.0)})
    apply_refit(model, refit, outcome, ("pleural effusion",))
    model.save_pretrained(tmp_path / "refit")
    loaded = CRRGModel.from_pretrained(str(tmp_path / "refit"))
    assert loaded.config.image_findings.findings == ("pneumonia", "pleural effusion")
    assert loaded.config.grounding.image_thresholds == {"pneumonia": 0.6, "pleural effusion": 0.2}
    assert loaded.config.calibration.image_findings == {"pneumonia": Platt(1.5, 0.1), "pleural effusion": Platt(2.0, -1.0)}
    weight = [k for k in refit.state_dict() if k.startswith("mlp.")][-2]
    assert torch.allclose(loaded.image_findings.state_dict()[weight][1].float(), refit.state_dict()[weight][1], atol=1e-2)


def test_firing_threshold_is_raised_just_enough() -> None:
    from train.report_gate import firing_threshold

    elsewhere = np.linspace(0.0, 0.99, 100)  # 100 films, evenly spread probabilities
    prior = 0.05  # bound 0.15: at most 15 films may reach the threshold
    raised = firing_threshold(0.3, elsewhere, prior)
    assert int((elsewhere >= raised).sum()) == 15 and int((elsewhere >= raised - 0.011).sum()) > 15
    assert firing_threshold(0.95, elsewhere, prior) == 0.95  # already within the bound: unchanged
    assert firing_threshold(0.1, elsewhere[:3], prior) == 0.1  # too few films to judge
    assert firing_check("x", elsewhere >= raised, prior).ok
