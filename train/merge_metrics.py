"""Merge the figures of the grounding / robustness runs into one ``train.evaluate`` metrics.json.

    python -m train.merge_metrics EVAL/metrics.json --heads runs/heads/metrics.json \
        [--heads-augmented runs/heads_aug/metrics.json] [--input-check runs/input_check/metrics.json] \
        [--measurements runs/measurements.json]

Adds ``cross_source`` (leave-one-source-out of the image-level finding head with every input /
sampling / augmentation variant, the chosen one's test figures, in-source per-source figures and
zero-shot per source), ``calibration`` (ECE before / after per task), ``region_findings``
(thresholds), ``input_check`` and ``measurements`` (``cardiothoracic_ratio``: the test-split CTR
error of the detector's boxes against the masks).

A model that changed only what those runs do not measure (the text tower, the report gate, a
grounding setting) keeps their figures: ``--carry PREVIOUS/metrics.json`` copies the sections the
new evaluation lacks (and says so under ``carried``); ``--source-gate``, ``--text-tower`` and
``--grounding-tuning`` add the figures of ``train.gate_findings``, ``train.train_text_tower`` and
``train.tune_grounding``, ``--rule-out`` those of ``train.rule_out`` (validation); ``--refit`` those of ``train.refit_image_findings`` (its calibration
entries replace the carried ones of the image-level findings), ``--image-tower`` the comparison of
``train.train_image_tower``, and ``--report-quality`` sets ``report_quality.all_test`` from a
``train.report_quality`` run over every test report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _read(path: Path | None) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def merge(metrics: dict[str, Any], heads: dict[str, Any], augmented: dict[str, Any] | None = None,
          input_check: dict[str, Any] | None = None, measurements: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    image = heads["image_level"]
    variants = {k: {"val_mean_balanced_accuracy": v["val"]["mean_balanced_accuracy"],
                    "test_mean_balanced_accuracy": v["test"]["mean_balanced_accuracy"],
                    "test": {s: v["test"][s] for s in v["test"] if s != "mean_balanced_accuracy"}}
                for k, v in (augmented or heads)["image_level"]["variants"].items()}
    metrics["cross_source"] = {
        "note": ("image-level finding head (pneumonia-like vs normal) trained without the held-out "
                 "source, threshold chosen on the other sources' validation images; the frozen "
                 "detector and CLIP towers saw every source in training except nih_cxr14 (added "
                 "after they were trained: its fold is fully unseen)"),
        "chosen": image["chosen"], "threshold": image["threshold"], "loso": image["loso"],
        "variants": variants, "per_source_in_source": image["per_source"],
        "zero_shot_pneumonia_by_source": heads.get("zero_shot_by_source"),
    }
    metrics["calibration"] = heads["calibration"]
    metrics["region_findings"] = heads["region_findings"]
    if input_check is not None:
        metrics["input_check"] = input_check
    if measurements is not None:
        metrics["measurements"] = {"cardiothoracic_ratio": measurements["test"]["both"]["detector"],
                                   "cardiothoracic_ratio_detail": measurements}
    return metrics


CARRIED = ("cross_source", "calibration", "region_findings", "input_check", "measurements", "report_quality",
           "source_gate", "text_tower", "grounding_tuning", "image_findings_refit", "image_tower_finetune",
           "rule_out")


def carry(metrics: dict[str, Any], previous: dict[str, Any], source: str,
          text_tower: dict[str, Any] | None = None) -> dict[str, Any]:
    """Copy :data:`CARRIED` sections the evaluation lacks from ``previous`` (a metrics.json of the
    same towers and heads); with ``text_tower``, the zero-shot calibration entries are replaced by
    the new temperature's (test ECE from the evaluation, validation ECE from the run)."""
    copied = [k for k in CARRIED if k in previous and k not in metrics]
    metrics.update({k: previous[k] for k in copied})
    if text_tower is not None and "calibration" in copied:
        calibration = {k: v for k, v in metrics["calibration"].items() if not k.startswith("zero_shot.")}
        for task in metrics["zero_shot"].values():
            calibration[f"zero_shot.{task['label']}"] = {
                "method": "temperature (one for all prompts)", "params": text_tower["zero_shot_temperature"]["params"],
                "n_test": task["n"], "ece_after": task.get("ece"),
                "val_ece_before": text_tower["zero_shot_temperature"]["ece_before"],
                "val_ece_after": text_tower["zero_shot_temperature"]["ece_after"]}
        metrics["calibration"] = calibration
    metrics["carried"] = {"from": source, "sections": copied,
                          "note": "figures of runs this model did not redo (its towers and heads' weights are those "
                                  "of the model they were measured on)"}
    return metrics


def apply_refit(metrics: dict[str, Any], refit: dict[str, Any]) -> dict[str, Any]:
    """``image_findings_refit`` from a ``train.refit_image_findings`` refit.json; the calibration
    entries of the refit findings are replaced, those of findings no longer shipped removed."""
    metrics["image_findings_refit"] = refit
    calibration = dict(metrics.get("calibration") or {})
    for finding in refit["findings"]:
        calibration.pop(f"image.{finding}", None)
    calibration.update({k: v for k, v in refit.get("calibration", {}).items()
                        if k.removeprefix("image.") in refit["kept"]})
    metrics["calibration"] = calibration
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", type=Path)
    parser.add_argument("--heads", type=Path, default=None)
    parser.add_argument("--heads-augmented", type=Path, default=None)
    parser.add_argument("--input-check", type=Path, default=None)
    parser.add_argument("--measurements", type=Path, default=None)
    parser.add_argument("--carry", type=Path, default=None, help="the previous model's metrics.json")
    parser.add_argument("--source-gate", type=Path, default=None, help="train.gate_findings source_gate.json")
    parser.add_argument("--text-tower", type=Path, default=None, help="train.train_text_tower metrics.json")
    parser.add_argument("--grounding-tuning", type=Path, default=None, help="train.tune_grounding output")
    parser.add_argument("--rule-out", type=Path, default=None, help="train.rule_out output (validation)")
    parser.add_argument("--refit", type=Path, default=None, help="train.refit_image_findings refit.json")
    parser.add_argument("--image-tower", type=Path, default=None, help="train.train_image_tower comparison JSON")
    parser.add_argument("--report-quality", type=Path, default=None,
                        help="train.report_quality figures over every test report (report_quality.all_test)")
    args = parser.parse_args(argv)
    if args.heads is None and args.carry is None:
        parser.error("give --heads (a heads run) or --carry (the previous model's metrics.json)")
    metrics = json.loads(args.metrics.read_text())
    if args.heads is not None:
        metrics = merge(metrics, json.loads(args.heads.read_text()), _read(args.heads_augmented),
                        _read(args.input_check), _read(args.measurements))
    text_tower = _read(args.text_tower)
    if args.carry is not None:
        metrics = carry(metrics, json.loads(args.carry.read_text()), str(args.carry), text_tower)
    for key, path in (("source_gate", args.source_gate), ("text_tower", args.text_tower),
                      ("grounding_tuning", args.grounding_tuning), ("rule_out", args.rule_out)):
        if path is not None:
            metrics[key] = json.loads(path.read_text())
    if args.refit is not None:
        metrics = apply_refit(metrics, json.loads(args.refit.read_text()))
    if args.image_tower is not None:
        metrics["image_tower_finetune"] = json.loads(args.image_tower.read_text())
    if args.report_quality is not None:
        metrics.setdefault("report_quality", {})["all_test"] = json.loads(args.report_quality.read_text())
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
