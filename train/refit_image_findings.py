"""Refit the image-level findings beyond pneumonia of a finished model on its cached tower outputs,
with co-occurrence priors on other hospitals' pneumonia-like films; everything else stays as it is.

    python -m train.cache_features --prepared P --weights DIR --out FEATURES
    python -m train.refit_image_findings --prepared P --features FEATURES --weights DIR --out OUT [--priors off]

Why: NIH ChestX-ray14 is the only source that labels pneumothorax, edema, mass and the rest, so a
head trained on it alone never sees another hospital's strongly abnormal film and extrapolates:
the 2026-12-06 head stated pneumothorax on 475 of 641 Kermany pneumonia test films. Here each such
finding's output also learns, on the pneumonia-like train films of the sources that do not assess
it, the best guess there is: its co-occurrence prior among the assessing sources' pneumonia-like
films (:func:`train.heads_data.prior_targets`). The head is trained with the model's own inputs and
source-balanced sampling, calibrated and thresholded as ``train.train_heads`` does
(:func:`train.image_level.extra_findings`), and a finding is stated only when it passes both gates
of :mod:`train.report_gate` on validation (within-source AUC; firing on unassessed pneumonia-like
films). The shipped head keeps its pneumonia output row, threshold and calibration; the other rows
are replaced by the refit ones that pass. The detector, CLIP, region heads, decoder and input check
are untouched.

Writes OUT (a model folder; the card, licence and metrics.json of DIR are carried over) and
OUT/refit.json (per finding: validation and test figures, both gates, the priors).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import torch

from crrg.findings import ImageFindings
from crrg.model import CRRGModel
from train.common import save_with_card
from train.datasets import PreparedData
from train.feature_cache import load_features
from train.heads_data import IMAGE_EXTRA, HeadData, build, cooccurrence_priors
from train.fit_heads import HeadFitConfig, fit
from train.image_level import HeadsOutcome, extra_findings, image_inputs, image_targets

logger = logging.getLogger("train.refit_image_findings")
PRIMARY = "pneumonia"


def refit_head(data: HeadData, base: ImageFindings, priors: bool, fit_config: HeadFitConfig | None = None
               ) -> tuple[ImageFindings, HeadsOutcome, tuple[str, ...]]:
    """A head over (pneumonia,) + :data:`IMAGE_EXTRA` that starts from ``base``: its input norm
    (frozen) and its pneumonia row (restored after training), so the primary output stays
    exactly ``base``'s; the other rows are trained on the cache, then calibrated, thresholded and
    gated (``fit_config``: ``train.train_heads``' image-level settings, source-balanced, by
    default). Returns (the head, the outcome holding thresholds, calibrations and metrics, the kept
    findings)."""
    findings = (PRIMARY,) + tuple(IMAGE_EXTRA)
    head = ImageFindings(dataclasses.replace(base.config, findings=findings))
    base_state = base.state_dict()
    out_keys = [k for k in base_state if k.startswith("mlp.")][-2:]  # the output layer's weight and bias
    primary = base.config.findings.index(PRIMARY)

    def with_base_primary(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for k in out_keys:
            state[k][0] = base_state[k][primary].float()
        return state

    head.load_state_dict(with_base_primary({k: v if k in out_keys else base_state[k].float()
                                            for k, v in head.state_dict().items()}))
    head.norm.requires_grad_(False)
    target, known = image_targets(data, findings, cooccurrence_priors(data) if priors else None)
    known = known.clone()
    known[:, 0] = False  # the primary output is not refit
    x = image_inputs(data, head.config.inputs)
    train, val = data.index("train"), data.index("val")
    train, val = train[known[train].any(1)], val[known[val].any(1)]
    head, _ = fit(head, lambda m, idx: m(x[idx]), train, val, target, known,
                  fit_config or HeadFitConfig(epochs=40, balance_sources=True), groups=data.sources)
    head.load_state_dict(with_base_primary(head.state_dict()))
    head.eval()
    with torch.no_grad():
        logits = head(x)  # [N, F]
    outcome = HeadsOutcome()
    kept, scalings, metrics = extra_findings(data, logits[:, 1:], outcome)
    outcome.metrics["extra_findings"] = metrics
    outcome.calibration = dataclasses.replace(outcome.calibration, image_findings=scalings)
    return head, outcome, kept


def apply_refit(model: CRRGModel, head: ImageFindings, outcome: HeadsOutcome, kept: tuple[str, ...]) -> None:
    """Replace ``model``'s image-level findings beyond pneumonia by ``kept`` of the refit ``head``
    (with their thresholds and calibrations)."""
    config = model.config
    model.image_findings = head.subset((PRIMARY,) + tuple(kept)).to(next(model.parameters()).dtype)
    primary = {f: v for f, v in config.grounding.image_thresholds.items() if f == PRIMARY}
    thresholds = {**primary, **{f: outcome.image_thresholds[f] for f in kept}}
    primary = {f: v for f, v in config.calibration.image_findings.items() if f == PRIMARY}
    scalings = {**primary, **{f: outcome.calibration.image_findings[f] for f in kept}}
    model.config = dataclasses.replace(
        config, image_findings=model.image_findings.config,
        grounding=dataclasses.replace(config.grounding, image_thresholds=thresholds),
        calibration=dataclasses.replace(config.calibration, image_findings=scalings))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True, help="train.cache_features of --weights")
    parser.add_argument("--weights", type=Path, required=True, help="model folder")
    parser.add_argument("--out", type=Path, required=True, help="output model folder")
    parser.add_argument("--priors", choices=("on", "off"), default="on",
                        help="co-occurrence priors on unassessed pneumonia-like films (off: labels only)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = build(PreparedData(args.prepared), load_features(args.features))
    model = CRRGModel.from_pretrained(str(args.weights))
    if model.image_findings is None:
        parser.error(f"{args.weights} has no image-level head")
    head, outcome, kept = refit_head(data, model.image_findings.float(), args.priors == "on")
    apply_refit(model, head, outcome, kept)
    save_with_card(model, args.weights, args.out)
    priors = dict(zip(IMAGE_EXTRA, cooccurrence_priors(data).tolist()))
    (args.out / "refit.json").write_text(json.dumps(
        {"priors_on": args.priors == "on", "priors": priors, "kept": list(kept),
         "findings": outcome.metrics["extra_findings"], "calibration": outcome.ece}, indent=2) + "\n")
    for finding, m in outcome.metrics["extra_findings"].items():
        fire = m.get("firing_elsewhere") or {}
        logger.info("%s: %s, val AUC %s, fires on %s of unassessed pneumonia-like val films (prior %s)", finding,
                    "kept" if m.get("kept") else "dropped", m.get("val_auc"), fire.get("rate"), fire.get("prior"))
    logger.info("wrote %s (kept: %s)", args.out, ", ".join(kept) or "none")


if __name__ == "__main__":
    main()
