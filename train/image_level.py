"""The image-level finding head's shared steps: targets, scores, calibration, thresholds and the
report gates of the findings beyond pneumonia (used by ``train.train_heads`` and
``train.refit_image_findings``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from crrg.calibration import (
    Calibration,
    Scaling,
    apply,
    expected_calibration_error,
    fit_platt_scaling,
    fit_temperature_scaling,
)
from crrg.findings import pooled_inputs
from train.heads_data import IMAGE_EXTRA, HeadData, cooccurrence_priors, prior_targets, unassessed_pneumonia
from train.report_gate import (
    MIN_FIRING_SENSITIVITY, MIN_VAL_CASES, firing_check, firing_threshold, gate, source_scores,
)


EXTRA_SPECIFICITY = 0.95  # its threshold keeps 95 % of validation negatives without a sentence

def binary_scores(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    said = p >= threshold
    pos, neg = y == 1, y == 0
    out: dict[str, Any] = {"n": int(len(y)), "n_positive": int(pos.sum())}
    out["sensitivity"] = float(said[pos].mean()) if pos.any() else None
    out["specificity"] = float((~said[neg]).mean()) if neg.any() else None
    out["auc"] = float(roc_auc_score(y, p)) if pos.any() and neg.any() else None
    if out["sensitivity"] is not None and out["specificity"] is not None:
        out["balanced_accuracy"] = (out["sensitivity"] + out["specificity"]) / 2
    return out

def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold with the largest sensitivity + specificity (pooled over sources)."""
    best, best_j = 0.5, -1.0
    for t in np.unique(np.round(p, 4)):
        j = (p[y == 1] >= t).mean() + (p[y == 0] < t).mean()
        if j > best_j:
            best, best_j = float(t), float(j)
    return best

def calibrate(val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
              method: str = "platt") -> tuple[Scaling, dict[str, Any]]:
    """Fit on validation logits/labels, report the test ECE before and after."""
    scaling = fit_platt_scaling(*val) if method == "platt" else fit_temperature_scaling(*val)
    before = expected_calibration_error(apply(None, test[0]), test[1])
    after = expected_calibration_error(apply(scaling, test[0]), test[1])
    return scaling, {"method": method, "params": scaling.to_json(), "n_val": int(len(val[1])),
                     "n_test": int(len(test[1])), "ece_before": before.ece, "ece_after": after.ece}

@dataclass
class HeadsOutcome:
    """What the steps of :func:`main` produce: heads, thresholds, calibration and metrics."""

    metrics: dict[str, Any] = field(default_factory=dict)
    ece: dict[str, Any] = field(default_factory=dict)
    region_thresholds: dict[str, float] = field(default_factory=dict)
    image_thresholds: dict[str, float] = field(default_factory=dict)
    calibration: Calibration = field(default_factory=Calibration)
    heads: dict[str, Any] = field(default_factory=dict)  # heads.pt content

def image_inputs(data: HeadData, inputs: tuple[str, ...]) -> torch.Tensor:
    return pooled_inputs(inputs, data.embedding, data.fused, data.crops, data.detected)

def image_targets(data: HeadData, findings: tuple[str, ...], priors: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, F] targets and known flags of image-level ``findings`` ("pneumonia": pneumonia-like,
    :func:`train.heads_data.image_target`; the others: :data:`train.heads_data.IMAGE_EXTRA`, with
    ``priors`` as soft targets on other sources' pneumonia-like films: :func:`prior_targets`)."""
    names = list(IMAGE_EXTRA)
    extra, extra_known = (data.extra, data.extra_known) if priors is None else prior_targets(data, priors)
    cols = [(data.image, data.image_known) if f == "pneumonia" else
            (extra[:, names.index(f)], extra_known[:, names.index(f)]) for f in findings]
    return torch.stack([c[0] for c in cols], 1), torch.stack([c[1] for c in cols], 1)

def specific_threshold(negative_probs: np.ndarray, specificity: float) -> float:
    """The lowest threshold that keeps ``specificity`` of the negatives below it."""
    return float(np.quantile(negative_probs, specificity)) + 1e-6 if len(negative_probs) else 0.5

def extra_findings(data: HeadData, logits: torch.Tensor, outcome: HeadsOutcome
                   ) -> tuple[tuple[str, ...], dict[str, Scaling], dict[str, Any]]:
    """Calibrate (Platt, validation), threshold (:data:`EXTRA_SPECIFICITY` on validation
    negatives) and score each :data:`IMAGE_EXTRA` output; a finding is kept for reports when it
    passes :func:`train.report_gate.gate`: validation AUC at least :data:`MIN_REPORT_AUC` within
    every source that assesses it with :data:`MIN_VAL_CASES` positives and negatives (a pooled
    AUC can come from telling the sources apart), and :func:`train.report_gate.firing_check` on
    the validation pneumonia-like films of the sources that do not assess it, at the threshold
    :func:`train.report_gate.firing_threshold` raises for it (kept only while that threshold
    states it on :data:`MIN_FIRING_SENSITIVITY` of the validation positives). Sets ``outcome.image_thresholds`` of each;
    returns (kept, scalings, metrics)."""
    val, test = data.index("val"), data.index("test")
    sources = np.array(data.sources)
    priors, unassessed = cooccurrence_priors(data), unassessed_pneumonia(data).numpy()
    kept, scalings, metrics = [], {}, {}
    for j, finding in enumerate(IMAGE_EXTRA):
        lj, yj, kj = logits[:, j].numpy(), data.extra[:, j].numpy(), data.extra_known[:, j].numpy()
        v, t = val.numpy()[kj[val.numpy()]], test.numpy()[kj[test.numpy()]]
        n_pos, n_neg = int(yj[v].sum()), int(len(v) - yj[v].sum())
        if min(n_pos, n_neg) < MIN_VAL_CASES:
            metrics[finding] = {"kept": False, "reason": f"{n_pos} val positives, {n_neg} negatives"}
            continue
        scaling, outcome.ece[f"image.{finding}"] = calibrate((lj[v], yj[v]), (lj[t], yj[t]))
        p = apply(scaling, lj)
        specific = specific_threshold(p[v][yj[v] == 0], EXTRA_SPECIFICITY)
        decision = gate(finding, source_scores(yj[v], p[v], sources[v]))
        elsewhere = val.numpy()[unassessed[val.numpy(), j]]
        threshold = firing_threshold(specific, p[elsewhere], float(priors[j]))
        firing = firing_check(finding, p[elsewhere] >= threshold, float(priors[j]))
        sensitivity = float((p[v][yj[v] == 1] >= threshold).mean())
        ok = decision.kept and firing.ok and (threshold == specific or sensitivity >= MIN_FIRING_SENSITIVITY)
        metrics[finding] = {"kept": ok, "sources": list(IMAGE_EXTRA[finding]),
                            "val_auc": float(roc_auc_score(yj[v], p[v])), "source_gate": decision.to_json(),
                            "specificity_threshold": specific, "firing_elsewhere": firing.to_json(),
                            "test_firing_elsewhere": firing_check(
                                finding, p[test.numpy()[unassessed[test.numpy(), j]]] >= threshold,
                                float(priors[j])).to_json(),
                            "threshold": threshold, "val": binary_scores(yj[v], p[v], threshold),
                            "test": binary_scores(yj[t], p[t], threshold)}
        outcome.image_thresholds[finding] = threshold
        if ok:
            kept.append(finding)
            scalings[finding] = scaling
    return tuple(kept), scalings, metrics
