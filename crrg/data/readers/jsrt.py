"""JSRT radiographs with the SCR expert masks (``jsrt_scr/``).

Layout: ``images/<id>.jpg``, ``masks/<organ>/<id>.png`` (right_lung, left_lung, heart,
right_clavicle, left_clavicle; same size as the image), ``labels.csv`` (image, nodule 0/1).
Boxes: all 29 regions from :mod:`crrg.data.silver` (lungs, heart, clavicles mask-backed).
Labels: nodule cases -> nodule and lung lesion; non-nodule cases (JSRT's "non-nodule" images)
are read as normal studies. Nodule positions are not published here, so the nodule is image-level.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from crrg.data.readers import NORMAL_LABELS, limited, read_csv
from crrg.data.records import Record
from crrg.data.silver import OrganMasks, derive_boxes

SOURCE = "jsrt_scr"
LICENCE = "JSRT database + SCR masks (van Ginneken et al. 2006): research use, cite both; no redistribution"
ORGANS: tuple[str, ...] = ("right_lung", "left_lung", "heart", "right_clavicle", "left_clavicle")


def _load_mask(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    if not path.is_file():
        return None
    with Image.open(path) as image:
        if image.size != size:
            raise ValueError(f"mask {path} is {image.size}, image is {size}")
        return np.asarray(image.convert("L")) > 0


def read_one(root: Path, image_rel: str, nodule: int) -> Record:
    path = root / image_rel
    stem = path.stem
    with Image.open(path) as image:
        size = image.size
    masks = {o: _load_mask(root / "masks" / o / f"{stem}.png", size) for o in ORGANS}
    silver = derive_boxes(OrganMasks(height=size[1], width=size[0], **masks))
    labels = {"nodule": 1, "lung lesion": 1, "no finding": 0} if nodule else dict(NORMAL_LABELS)
    return Record(
        source=SOURCE, patient=stem, image=path, width=size[0], height=size[1],
        boxes=silver.boxes, annotated=tuple(silver.boxes), derived=silver.derived,
        labels=labels, study=stem, licence=LICENCE, view="PA",
    ).validate()


def read(root: Path, limit: int | None = None) -> Iterator[Record]:
    table = root / "labels.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{SOURCE}: expected {table} (columns image, nodule)")
    rows = read_csv(table)
    return limited((read_one(root, row["image"], int(row["nodule"])) for row in rows), limit)
