"""Apply the within-source validation gate (:mod:`train.report_gate`) to a finished model.

    python -m train.evaluate --weights DIR --prepared P --out VAL --split val --sources nih_cxr14 jsrt_scr
    python -m train.gate_findings --weights DIR --val-metrics VAL/metrics.json --out OUT

The image-level head of DIR keeps only the findings that pass the gate on the validation run
(``pneumonia``, the head's primary output, is chosen leave-one-source-out by ``train.train_heads``
and is always kept); the others' output rows, thresholds and calibrations are removed, so the
pipeline neither states them nor returns their probabilities. Writes OUT (a model folder: an
existing card, licence and metrics.json of DIR are carried over) and OUT/source_gate.json (every
decision with its per-source figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from crrg.model import CRRGModel
from train.common import save_with_card
from train.report_gate import GateDecision, gate_from_metrics

logger = logging.getLogger("train.gate_findings")
PRIMARY = "pneumonia"


def gate_model(model: CRRGModel, decisions: dict[str, GateDecision]) -> tuple[str, ...]:
    """Cut ``model``'s image-level head (and its thresholds and calibrations) to the primary
    finding and the findings ``decisions`` keep; returns the dropped findings."""
    head = model.image_findings
    if head is None:
        return ()
    names = head.config.findings
    keep = tuple(f for f in names if f == PRIMARY or (f in decisions and decisions[f].kept))
    dropped = tuple(f for f in names if f not in keep)
    if not dropped:
        return ()
    model.image_findings = head.subset(keep)
    config = model.config
    grounding = dataclasses.replace(config.grounding, image_thresholds={
        f: t for f, t in config.grounding.image_thresholds.items() if f not in dropped})
    calibration = dataclasses.replace(config.calibration, image_findings={
        f: s for f, s in config.calibration.image_findings.items() if f not in dropped})
    model.config = dataclasses.replace(config, image_findings=model.image_findings.config,
                                       grounding=grounding, calibration=calibration)
    return dropped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True, help="model folder")
    parser.add_argument("--val-metrics", type=Path, required=True,
                        help="metrics.json of train.evaluate --split val on these weights")
    parser.add_argument("--out", type=Path, required=True, help="output model folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    val = json.loads(args.val_metrics.read_text())
    if val.get("split") != "val":
        parser.error(f"{args.val_metrics} is a {val.get('split')!r} evaluation; the gate is chosen on 'val'")
    model = CRRGModel.from_pretrained(str(args.weights))
    names = model.image_findings.config.findings if model.image_findings is not None else ()
    decisions = gate_from_metrics(val["image_findings"], [f for f in names if f != PRIMARY])
    for finding, decision in decisions.items():
        logger.info("%s: %s (%s)", finding, "kept" if decision.kept else "dropped", decision.reason)
    dropped = gate_model(model, decisions)
    save_with_card(model, args.weights, args.out)
    (args.out / "source_gate.json").write_text(json.dumps(
        {"val_metrics": str(args.val_metrics), "dropped": list(dropped),
         "decisions": {f: d.to_json() for f, d in decisions.items()}}, indent=2) + "\n")
    logger.info("wrote %s (dropped: %s)", args.out, ", ".join(dropped) or "none")


if __name__ == "__main__":
    main()
