"""Validate the cardiothoracic ratio (CTR) from the detector's boxes against the same ratio from masks.

    python -m train.validate_measurements --data ../shared/data --weights assets/crrg-default \
        --split all --out runs/measurements/metrics.json

Reference (mask) ratio, cardiac width over thoracic width, both horizontal extents in pixels:
- JSRT (SCR masks, PA): the heart mask's extent over the extent of the union of the right and left
  lung masks.
- COVID-19 anatomy (masks placed at their ``structure.csv`` crops): the dataset has no heart mask,
  only ``Cardiomediastinum`` (heart + mediastinum + great vessels). Its upper part is mediastinum and
  aortic knob, so the cardiac width is the extent of the cardiomediastinum mask over the lower half
  of its rows (the heart level), over the extent of the union of the ``Right Lung`` and ``Left
  Lung`` masks. What is compared there is the cardiomediastinal silhouette at heart level.
Predicted ratio: :func:`crrg.measurements.cardiothoracic_ratio` of the pipeline's boxes (original
pixels). Silver ratio: the same rule on the silver boxes (:mod:`crrg.data.silver`, what the
detector was trained on), so the error splits into the box rule's and the detector's. Errors are
predicted minus reference; figures per source for the patient-disjoint test split (the headline:
the detector never saw those images) and, with ``--split all``, for every image.

Candidate second measurements (COVID-19 anatomy only: the one source with cardiomediastinum and
airway masks) are scored under ``candidates`` against a constant predictor (the reference median);
see :data:`crrg.measurements` for which ones the pipeline reports.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from crrg.data.readers import read_csv, read_source
from crrg.data.readers.covid_anatomy import _place_mask
from crrg.data.silver import find_carina
from crrg.data.splits import assign_splits
from crrg.measurements import CTR_ENLARGED, HEART, LEFT_LUNG, RIGHT_LUNG, cardiothoracic_ratio

logger = logging.getLogger(__name__)
SOURCES = ("jsrt_scr", "covid_anatomy")
CANDIDATES = ("tracheal_deviation", "upper_mediastinal_ratio")


@dataclass
class Case:
    """One image (``key``: its path under the data root): its split, reference values from masks,
    and the values from its silver boxes and from the detector's boxes."""

    key: str
    source: str
    path: Path
    split: str
    reference: dict[str, float | None]
    silver: dict[str, float | None]
    predicted: dict[str, float | None] = field(default_factory=dict)


# --- masks -------------------------------------------------------------------------------------

def _extent(mask: np.ndarray | None, rows: slice = slice(None)) -> tuple[float, float] | None:
    if mask is None:
        return None
    cols = np.flatnonzero(mask[rows].any(axis=0))
    return (float(cols[0]), float(cols[-1] + 1)) if len(cols) else None


def _thorax(lungs: Sequence[np.ndarray | None]) -> tuple[float, float] | None:
    spans = [_extent(m) for m in lungs]
    if any(s is None for s in spans):
        return None
    return min(s[0] for s in spans), max(s[1] for s in spans)  # type: ignore[index]


def _ratio(part: tuple[float, float] | None, whole: tuple[float, float] | None) -> float | None:
    if part is None or whole is None or whole[1] <= whole[0]:
        return None
    return (part[1] - part[0]) / (whole[1] - whole[0])


def _load(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 0


def jsrt_reference(root: Path, stem: str) -> dict[str, float | None]:
    """{"ctr"} from the SCR heart and lung masks of JSRT image ``stem``."""
    heart = _load(root / "masks" / "heart" / f"{stem}.png")
    lungs = [_load(root / "masks" / side / f"{stem}.png") for side in ("right_lung", "left_lung")]
    return {"ctr": _ratio(_extent(heart), _thorax(lungs))}


def anatomy_references(root: Path) -> dict[str, dict[str, float | None]]:
    """{image path: {"ctr", "tracheal_deviation", "upper_mediastinal_ratio"}} for COVID-19 anatomy.

    ``tracheal_deviation``: (median centre of the airway mask above the carina - centre of the lung
    union) / lung-union width; positive = towards the image's right (the patient's left).
    ``upper_mediastinal_ratio``: extent of the cardiomediastinum mask over the upper half of its rows
    / lung-union width."""
    parts: dict[str, dict[str, dict[str, str]]] = {}
    for row in read_csv(root / "structure.csv"):
        parts.setdefault(row["Image"], {})[row["Template Name"]] = row
    out: dict[str, dict[str, float | None]] = {}
    for image, rows in parts.items():
        with Image.open(root / image) as im:
            w, h = im.size
        masks = {n: _place_mask(root, rows[n], w, h) if n in rows else None
                 for n in ("Cardiomediastinum", "Right Lung", "Left Lung", "Airways")}
        thorax = _thorax([masks["Right Lung"], masks["Left Lung"]])
        cm, ref = masks["Cardiomediastinum"], {"ctr": None, "tracheal_deviation": None,
                                              "upper_mediastinal_ratio": None}
        if cm is not None and cm.any():
            ys = np.flatnonzero(cm.any(axis=1))
            middle = (ys[0] + ys[-1] + 1) // 2
            ref["ctr"] = _ratio(_extent(cm, slice(middle, None)), thorax)
            ref["upper_mediastinal_ratio"] = _ratio(_extent(cm, slice(None, middle)), thorax)
        airways = masks["Airways"]
        carina = find_carina(airways) if airways is not None and airways.any() else None
        if carina is not None and thorax is not None:
            part = airways[: int(round(carina[1]))]
            centres = [np.flatnonzero(r).mean() + 0.5 for r in part if r.any()]
            if centres:
                ref["tracheal_deviation"] = (float(np.median(centres)) - (thorax[0] + thorax[1]) / 2) / (
                    thorax[1] - thorax[0])
        out[(root / image).resolve().as_posix()] = ref
    return out


# --- boxes -------------------------------------------------------------------------------------

def box_values(boxes: dict[str, Sequence[float] | None]) -> dict[str, float | None]:
    """CTR and the candidate measurements from region boxes {name: xyxy or None}."""
    out: dict[str, float | None] = {"ctr": cardiothoracic_ratio(boxes),
                                    "tracheal_deviation": None, "upper_mediastinal_ratio": None}
    right, left = boxes.get(RIGHT_LUNG), boxes.get(LEFT_LUNG)
    if right is None or left is None:
        return out
    x1, x2 = min(right[0], left[0]), max(right[2], left[2])
    if x2 <= x1:
        return out
    trachea, um = boxes.get("trachea"), boxes.get("upper mediastinum")
    if trachea is not None:
        out["tracheal_deviation"] = ((trachea[0] + trachea[2]) / 2 - (x1 + x2) / 2) / (x2 - x1)
    if um is not None:
        out["upper_mediastinal_ratio"] = (um[2] - um[0]) / (x2 - x1)
    return out


def read_cases(data: Path, split: str) -> list[Case]:
    records = [r for s in SOURCES for r in read_source(s, data / s)]
    splits = assign_splits(records)
    anatomy = anatomy_references(data / "covid_anatomy")
    cases = []
    for r in records:
        if split == "test" and splits[r.key] != "test":
            continue
        path = Path(r.image).resolve()
        ref = jsrt_reference(data / "jsrt_scr", path.stem) if r.source == "jsrt_scr" else anatomy[path.as_posix()]
        key = path.relative_to(data).as_posix() if path.is_relative_to(data) else path.as_posix()
        cases.append(Case(key, r.source, path, splits[r.key], ref, box_values(dict(r.boxes))))
    return cases


def predict(cases: list[Case], weights: str, batch: int = 8) -> None:
    import crrg

    pipe = crrg.load(weights)
    names = (HEART, RIGHT_LUNG, LEFT_LUNG, "trachea", "upper mediastinum")
    for start in range(0, len(cases), batch):
        chunk = cases[start:start + batch]
        results = pipe.batch([str(c.path) for c in chunk], prompts=[], regions=[])
        for case, result in zip(chunk, results):
            case.predicted = box_values({n: result.region(n).box for n in names})
        logger.info("%d / %d images", start + len(chunk), len(cases))


# --- statistics --------------------------------------------------------------------------------

def error_stats(pairs: Iterable[tuple[float | None, float | None]]) -> dict[str, Any]:
    """MAE, median and 90th percentile absolute error, bias (mean of predicted - reference), n."""
    kept = [(p, t) for p, t in pairs if p is not None and t is not None]
    if not kept:
        return {"n": 0}
    pred, ref = np.array(kept).T
    err = pred - ref
    out = {"n": len(kept), "mae": float(np.abs(err).mean()), "median_ae": float(np.median(np.abs(err))),
           "p90_ae": float(np.percentile(np.abs(err), 90)), "bias": float(err.mean()),
           "within_0.03": float((np.abs(err) <= 0.03).mean())}
    if len(kept) > 2 and ref.std() > 0 and pred.std() > 0:
        out["pearson_r"] = float(np.corrcoef(pred, ref)[0, 1])
    out["constant_mae"] = float(np.abs(ref - np.median(ref)).mean())  # predicting the median
    return out


def enlarged_agreement(pairs: Iterable[tuple[float | None, float | None]]) -> dict[str, Any]:
    """Agreement of the CTR > 0.5 call between predicted and reference ratios."""
    kept = [(p > CTR_ENLARGED, t > CTR_ENLARGED) for p, t in pairs if p is not None and t is not None]
    if not kept:
        return {"n": 0}
    pred, ref = np.array(kept).T
    out: dict[str, Any] = {"n": len(kept), "reference_enlarged": int(ref.sum()), "predicted_enlarged": int(pred.sum()),
                           "accuracy": float((pred == ref).mean())}
    if ref.any():
        out["sensitivity"] = float(pred[ref].mean())
    if (~ref).any():
        out["specificity"] = float((~pred[~ref]).mean())
    return out


def summarise(cases: list[Case], scopes: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scope in scopes:
        part = [c for c in cases if scope == "all" or c.split == "test"]
        section: dict[str, Any] = {}
        for source in (*SOURCES, "both"):
            mine = [c for c in part if source == "both" or c.source == source]
            section[source] = {
                "detector": error_stats((c.predicted.get("ctr"), c.reference["ctr"]) for c in mine),
                "silver_boxes": error_stats((c.silver["ctr"], c.reference["ctr"]) for c in mine),
                "detector_vs_silver": error_stats((c.predicted.get("ctr"), c.silver["ctr"]) for c in mine),
                "enlarged": enlarged_agreement((c.predicted.get("ctr"), c.reference["ctr"]) for c in mine),
                "images": len(mine),
            }
        anatomy = [c for c in part if c.source == "covid_anatomy"]
        section["candidates"] = {
            name: {"detector": error_stats((c.predicted.get(name), c.reference.get(name)) for c in anatomy),
                   "silver_boxes": error_stats((c.silver.get(name), c.reference.get(name)) for c in anatomy)}
            for name in CANDIDATES}
        out[scope] = section
    return out


def write_per_image(cases: list[Case], path: Path) -> None:
    keys = ("ctr", *CANDIDATES)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        kinds = ("reference", "silver", "detector")
        writer.writerow(["key", "source", "split", *(f"{k}_{w}" for k in keys for w in kinds)])
        for c in cases:
            values = [v for k in keys for v in (c.reference.get(k), c.silver.get(k), c.predicted.get(k))]
            writer.writerow([c.key, c.source, c.split, *("" if v is None else f"{v:.4f}" for v in values)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CRRG_DATA", "../shared/data")))
    parser.add_argument("--weights", default="assets/crrg-default")
    parser.add_argument("--split", choices=("test", "all"), default="all",
                        help="test: the test split only; all: every image, reported for 'all' and 'test'")
    parser.add_argument("--out", type=Path, default=Path("runs/measurements/metrics.json"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    cases = read_cases(args.data.resolve(), args.split)
    logger.info("%d images with masks", len(cases))
    predict(cases, args.weights)
    scopes = ("test", "all") if args.split == "all" else ("test",)
    result = {"weights": str(args.weights), "reference": __doc__.split("\n\n")[2], **summarise(cases, scopes)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    write_per_image(cases, args.out.with_name("per_image.csv"))
    print(json.dumps({s: {src: result[s][src]["detector"].get("mae") for src in (*SOURCES, "both")} for s in scopes}))


if __name__ == "__main__":
    main()
