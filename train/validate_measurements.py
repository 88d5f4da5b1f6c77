"""Validate the cardiothoracic ratio from detected boxes against the same ratio from masks.

    python -m train.validate_measurements --prepared runs/prepared --features runs/features \
        --out runs/measurements.json

Mask ratio (the reference):
- JSRT (SCR masks): heart-mask width / width of the union of the right and left lung masks;
- COVID-19 anatomy: the cardiomediastinum mask has no separate heart, so the cardiac width is the
  widest extent of that mask over its lower half (the heart level; the upper half is the
  mediastinum and aortic knob), over the width of the union of the two lung masks.
Predicted ratio: :func:`crrg.measurements.cardiothoracic_ratio` of the detector's boxes (cached by
``train.region_features``). Also the silver boxes' ratio (what the detector was trained on), which
splits the error into the box rule's and the detector's. Figures per source, for the test split
(headline) and for every image (train images were seen by the detector).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crrg.data.readers import read_csv
from crrg.data.readers.covid_anatomy import _place_mask
from crrg.measurements import cardiothoracic_ratio
from crrg.regions import REGIONS
from train.datasets import Prepared
from train.region_features import load_features


def _mask(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 0


def _cols(mask: np.ndarray) -> tuple[int, int] | None:
    cols = np.flatnonzero(mask.any(axis=0))
    return (int(cols[0]), int(cols[-1]) + 1) if len(cols) else None


def _ratio(heart: tuple[int, int] | None, lungs: list[np.ndarray | None]) -> float | None:
    if heart is None or any(m is None for m in lungs):
        return None
    spans = [_cols(m) for m in lungs]
    if any(s is None for s in spans):
        return None
    thorax = max(s[1] for s in spans) - min(s[0] for s in spans)
    return (heart[1] - heart[0]) / thorax if thorax > 0 else None


def jsrt_mask_ratio(root: Path, stem: str) -> float | None:
    heart = _mask(root / "masks" / "heart" / f"{stem}.png")
    lungs = [_mask(root / "masks" / side / f"{stem}.png") for side in ("right_lung", "left_lung")]
    return _ratio(_cols(heart) if heart is not None else None, lungs)


def anatomy_mask_ratios(root: Path) -> dict[str, float | None]:
    """{prepared image key: mask ratio} for every COVID-19 anatomy image."""
    rows: dict[str, dict[str, dict[str, str]]] = {}
    for row in read_csv(root / "structure.csv"):
        rows.setdefault(row["Image"], {})[row["Template Name"]] = row
    out: dict[str, float | None] = {}
    for image, parts in rows.items():
        with Image.open(root / image) as im:
            w, h = im.size
        masks = {name: _place_mask(root, parts[name], w, h) if name in parts else None
                 for name in ("Cardiomediastinum", "Right Lung", "Left Lung")}
        cm = masks["Cardiomediastinum"]
        heart = None
        if cm is not None and cm.any():
            ys = np.flatnonzero(cm.any(axis=1))
            lower = cm[(ys[0] + ys[-1]) // 2: ys[-1] + 1]
            heart = _cols(lower)
        out[f"covid_anatomy/{image}"] = _ratio(heart, [masks["Right Lung"], masks["Left Lung"]])
    return out


def _stats(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    if not pairs:
        return {"n": 0}
    err = np.array([p - t for p, t in pairs])
    return {"n": len(pairs), "mae": float(np.abs(err).mean()), "median_ae": float(np.median(np.abs(err))),
            "p90_ae": float(np.percentile(np.abs(err), 90)), "bias": float(err.mean()),
            "within_0.03": float((np.abs(err) <= 0.03).mean())}


def validate(prepared: Prepared, features: dict[str, dict[str, Any]]) -> dict[str, Any]:
    root = prepared.data_root
    silver = {r["image"]: r["boxes"] for r in prepared.regions(None)}
    truth: dict[str, float | None] = anatomy_mask_ratios(root / "covid_anatomy")
    rows = [r for r in prepared.images(None) if r["source"] in ("jsrt_scr", "covid_anatomy")]
    for r in rows:
        if r["source"] == "jsrt_scr":
            truth[r["image"]] = jsrt_mask_ratio(root / "jsrt_scr", Path(r["image"]).stem)
    out: dict[str, Any] = {}
    for scope in ("test", "all"):
        part = [r for r in rows if scope == "all" or r["split"] == "test"]
        section: dict[str, Any] = {}
        for source in ("jsrt_scr", "covid_anatomy", "both"):
            pred, rule = [], []
            for r in part:
                if source != "both" and r["source"] != source:
                    continue
                t = truth.get(r["image"])
                if t is None:
                    continue
                if r["image"] in features:
                    f = features[r["image"]]
                    boxes = {n: (f["boxes"][i].tolist() if bool(f["detected"][i]) else None)
                             for i, n in enumerate(REGIONS)}
                    p = cardiothoracic_ratio(boxes)
                    if p is not None:
                        pred.append((p, t))
                s = cardiothoracic_ratio(silver.get(r["image"], {}))
                if s is not None:
                    rule.append((s, t))
            section[source] = {"detector": _stats(pred), "silver_boxes": _stats(rule)}
        out[scope] = section
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = validate(Prepared(args.prepared), load_features(args.features))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: {s: v[s]["detector"].get("mae") for s in v} for k, v in result.items()}))


if __name__ == "__main__":
    main()
