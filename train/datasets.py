"""Datasets over a ``train.prepare`` folder: images with region boxes, targets and sentences.

``PreparedData`` reads ``meta.json`` / ``regions.jsonl`` / ``images.jsonl`` / ``sentences.jsonl``
(formats in :mod:`train.preparation`). Images go through :func:`crrg.images.load_image` and
:func:`crrg.images.preprocess` (the same path as inference), boxes are mapped to tensor pixels
with the returned geometry, then :func:`augment` applies light, box-aware augmentation: a small
zoom and shift, brightness and contrast; never a horizontal flip (left/right regions differ).
Only the ``train`` split is ever used for training (``val`` for validation losses), so the
Kermany / COVID radiography test parts and ``excluded`` images are never seen.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from crrg.images import IMAGE_MEAN, IMAGE_STD, Geometry, load_image, preprocess
from crrg.regions import NUM_REGIONS, REGION_INDEX, REGIONS

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ the folder
class PreparedData:
    """A folder written by ``python -m train.prepare`` (``data_root`` overrides meta.json's)."""

    def __init__(self, folder: str | Path, data_root: str | Path | None = None) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found: --prepared must be a folder written by "
                                    "`python -m train.prepare --data DIR --out OUT`")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        root = data_root or self.meta.get("data_root")
        if root is None:
            raise ValueError(f"{meta_path} records no data_root; pass --data DIR")
        self.data_root = Path(root)

    def _lines(self, name: str) -> list[dict[str, Any]]:
        path = self.folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (re-run train.prepare)")
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def _split(self, name: str, split: str | Sequence[str] | None) -> list[dict[str, Any]]:
        lines = self._lines(name)
        if split is None:
            return lines
        splits = {split} if isinstance(split, str) else set(split)
        return [line for line in lines if line.get("split") in splits]

    def regions(self, split: str | Sequence[str] | None = "train") -> list[dict[str, Any]]:
        return self._split("regions.jsonl", split)

    def images(self, split: str | Sequence[str] | None = "train") -> list[dict[str, Any]]:
        return self._split("images.jsonl", split)

    def sentences(self, split: str | Sequence[str] | None = "train") -> list[dict[str, Any]]:
        return self._split("sentences.jsonl", split)

    def path(self, ref: str) -> Path:
        path = Path(ref)
        return path if path.is_absolute() else self.data_root / path


def report_records(path: Path, prepared: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``python -m crrg report --out`` (failed images skipped), each with the
    ``source`` / ``split`` / ``labels`` of its row in ``prepared/images.jsonl``, matched on the end
    of the image path (``None`` for an image the prepared folder does not know)."""
    meta = {}
    with (prepared / "images.jsonl").open() as handle:
        for line in handle:
            row = json.loads(line)
            meta[row["image"]] = row
    records = []
    with path.open() as handle:
        for line in handle:
            record = json.loads(line)
            if "report" not in record:
                continue  # a failed image
            parts = Path(record["image"]).parts
            key = next((k for k in ("/".join(parts[i:]) for i in range(len(parts))) if k in meta), None)
            info = meta.get(key, {})
            records.append({**record, "source": info.get("source"), "split": info.get("split"),
                            "labels": info.get("labels")})
    return records


def capped_sample(rows: Sequence[dict[str, Any]], group: Callable[[dict[str, Any]], Any], cap: int | None,
                  seed: int = 0) -> list[dict[str, Any]]:
    """``rows`` with at most ``cap`` of each group (``group(row)``: a sortable key, ``None`` for a
    row that is always kept), drawn with a fixed seed from each group in path order, groups in
    key order; the result sorted by image path. ``cap=None`` keeps every row."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    keep = []
    for row in rows:
        key = group(row) if cap is not None else None
        if key is None:
            keep.append(row)
        else:
            groups.setdefault(key, []).append(row)
    rng = random.Random(seed)
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda r: r["image"])
        keep += rng.sample(members, min(cap, len(members)))
    return sorted(keep, key=lambda r: r["image"])


# ----------------------------------------------------------------------------- augmentation
@dataclass
class AugmentConfig:
    """Light augmentation. ``scale``: zoom factor drawn from [1 - scale, 1 + scale]; ``shift``:
    translation up to this fraction of the side; ``brightness`` (additive, [0, 1] intensity
    units) and ``contrast`` (factor in [1 - c, 1 + c] around the image mean). No flips."""

    enabled: bool = True
    scale: float = 0.1
    shift: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.15
    min_visible: float = 0.5  # a box keeps its region only if this share of it stays in view


def augment(image: Tensor, geometry: Geometry, boxes: Tensor, cfg: AugmentConfig,
            rng: random.Random) -> tuple[Tensor, Tensor, Tensor]:
    """Augment a preprocessed image [1, S, S] and its tensor-pixel boxes [K, 4].

    Returns (image [1, S, S], boxes [K, 4] clipped, keep [K] bool: box still visible enough).
    Photometric changes touch only the image content (the black padding stays black).
    """
    size = image.shape[-1]
    pixels = image * IMAGE_STD + IMAGE_MEAN  # [1, S, S] in [0, 1]
    y0, x0 = geometry.pad_y, geometry.pad_x
    y1, x1 = y0 + geometry.resized_height, x0 + geometry.resized_width
    content = pixels[:, y0:y1, x0:x1]
    contrast = 1 + rng.uniform(-cfg.contrast, cfg.contrast)
    brightness = rng.uniform(-cfg.brightness, cfg.brightness)
    mean = content.mean()
    pixels[:, y0:y1, x0:x1] = ((content - mean) * contrast + mean + brightness).clamp(0, 1)
    s = 1 + rng.uniform(-cfg.scale, cfg.scale)
    tx, ty = (rng.uniform(-cfg.shift, cfg.shift) * size for _ in range(2))
    # output = s * (input - c) + c + t  <=>  input = (output - c - t) / s + c (normalised coords)
    theta = torch.tensor([[1 / s, 0.0, -2 * tx / size / s], [0.0, 1 / s, -2 * ty / size / s]],
                         dtype=image.dtype)[None]  # [1, 2, 3]
    grid = F.affine_grid(theta, [1, 1, size, size], align_corners=False)  # [1, S, S, 2]
    pixels = F.grid_sample(pixels[None], grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)[0]  # [1, S, S]
    centre = size / 2
    moved = (boxes - centre) * s + centre + torch.tensor([tx, ty, tx, ty], dtype=boxes.dtype)  # [K, 4]
    clipped = moved.clamp(0, size)  # [K, 4]
    area = lambda b: (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)  # noqa: E731
    keep = (area(clipped) >= cfg.min_visible * area(moved)) & ((clipped[:, 2:] - clipped[:, :2]) >= 2).all(1)
    return (pixels - IMAGE_MEAN) / IMAGE_STD, clipped, keep


# -------------------------------------------------------------------------------- images
class ImageReader:
    """Path -> (preprocessed [1, S, S], geometry), optionally cached in memory as uint8."""

    def __init__(self, prepared: PreparedData, size: int, cache: bool = False) -> None:
        self.prepared, self.size, self.cache = prepared, size, cache
        self._cache: dict[str, tuple[Tensor, Geometry]] = {}

    def __call__(self, ref: str) -> tuple[Tensor, Geometry]:
        if ref in self._cache:
            pixels, geometry = self._cache[ref]
            return (pixels.float() / 255 - IMAGE_MEAN) / IMAGE_STD, geometry
        tensor, geometry = preprocess(load_image(self.prepared.path(ref)), size=self.size)  # [1, S, S]
        if self.cache:
            pixels = ((tensor * IMAGE_STD + IMAGE_MEAN) * 255).round().clamp(0, 255).to(torch.uint8)
            self._cache[ref] = (pixels, geometry)
        return tensor, geometry


def record_target(record: dict[str, Any], geometry: Geometry, use_derived: bool = True
                  ) -> dict[str, Tensor]:
    """Detector target of a regions.jsonl line: boxes in tensor pixels, labels 1..29, annotated."""
    names = [r for r in REGIONS if r in record.get("boxes", {}) and r in record.get("annotated", [])]
    if not use_derived:
        names = [r for r in names if r not in set(record.get("derived", []))]
    original = np.array([record["boxes"][r] for r in names], dtype=np.float32).reshape(-1, 4)
    boxes = torch.as_tensor(geometry.to_tensor(original), dtype=torch.float32).reshape(-1, 4)  # [K, 4]
    labels = torch.tensor([REGION_INDEX[r] + 1 for r in names], dtype=torch.int64)  # [K]
    annotated = torch.zeros(NUM_REGIONS, dtype=torch.bool)
    annotated[labels - 1] = True
    return {"boxes": boxes, "labels": labels, "annotated": annotated}


def _apply_keep(target: dict[str, Tensor], boxes: Tensor, keep: Tensor) -> dict[str, Tensor]:
    """Drop boxes pushed out of view; their regions become unannotated (unknown)."""
    annotated = target["annotated"].clone()
    annotated[target["labels"][~keep] - 1] = False
    return {"boxes": boxes[keep], "labels": target["labels"][keep], "annotated": annotated}


# ------------------------------------------------------------------------------- datasets
Fields = Callable[[dict[str, Any], random.Random], dict[str, Any]]


class ImageDataset(Dataset):
    """One item per record: the (augmented) image, its detector target when it has boxes, and
    whatever ``fields(record, rng)`` adds (targets, sampled sentences ...).

    Item: ``{"image": [1, S, S], "target": {...} | None, **fields}``.
    """

    def __init__(self, records: list[dict[str, Any]], reader: ImageReader,
                 augment_cfg: AugmentConfig | None = None, fields: Fields | None = None,
                 use_derived: bool = True) -> None:
        self.records, self.reader, self.augment_cfg = records, reader, augment_cfg
        self.fields, self.use_derived = fields, use_derived

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        # The global ``random`` state is seeded per run / rank (train.common) and per DataLoader
        # worker (torch), and saved in checkpoints, so items differ across workers and resume.
        rng = random.Random(random.getrandbits(64))
        image, geometry = self.reader(record["image"])
        target = record_target(record, geometry, self.use_derived) if record.get("boxes") else None
        if self.augment_cfg is not None and self.augment_cfg.enabled:
            boxes = target["boxes"] if target is not None else torch.zeros(0, 4)
            image, boxes, keep = augment(image, geometry, boxes, self.augment_cfg, rng)
            if target is not None:
                target = _apply_keep(target, boxes, keep)
        if target is not None and target["boxes"].shape[0] == 0:
            target = None
        item = {"image": image, "target": target, "ref": record["image"]}
        if self.fields is not None:
            item.update(self.fields(record, rng))
        return item


def collate_images(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images and tensor fields; targets and other fields stay lists. Adds ``n``."""
    batch: dict[str, Any] = {"images": torch.stack([it["image"] for it in items]), "n": len(items)}  # [B, 1, S, S]
    for key in items[0]:
        if key == "image":
            continue
        values = [it[key] for it in items]
        batch[key] = torch.stack(values) if isinstance(values[0], Tensor) else values
    batch["targets"] = batch.pop("target")
    return batch


def merge_records(regions: list[dict[str, Any]], images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join regions.jsonl and images.jsonl lines by image path (one record per image)."""
    merged: dict[str, dict[str, Any]] = {}
    for line in images:
        merged[line["image"]] = dict(line)
    for line in regions:
        record = merged.setdefault(line["image"], {})
        record.update({k: v for k, v in line.items() if k not in record or k in ("boxes", "annotated", "derived")})
    return [r for r in merged.values() if r.get("image")]
