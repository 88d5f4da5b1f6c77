"""Merge the figures of the grounding / robustness runs into one ``train.evaluate`` metrics.json.

    python -m train.merge_metrics EVAL/metrics.json --heads runs/heads/metrics.json \
        [--heads-augmented runs/heads_aug/metrics.json] [--input-check runs/input_check/metrics.json] \
        [--measurements runs/measurements.json]

Adds ``cross_source`` (leave-one-source-out of the image-level finding head with every input /
sampling / augmentation variant, the chosen one's test figures, in-source per-source figures and
zero-shot per source), ``calibration`` (ECE before / after per task), ``region_findings``
(thresholds), ``input_check`` and ``measurements`` (``cardiothoracic_ratio``: the test-split CTR
error of the detector's boxes against the masks).
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", type=Path)
    parser.add_argument("--heads", type=Path, required=True)
    parser.add_argument("--heads-augmented", type=Path, default=None)
    parser.add_argument("--input-check", type=Path, default=None)
    parser.add_argument("--measurements", type=Path, default=None)
    args = parser.parse_args(argv)
    metrics = merge(json.loads(args.metrics.read_text()), json.loads(args.heads.read_text()),
                    _read(args.heads_augmented), _read(args.input_check), _read(args.measurements))
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
