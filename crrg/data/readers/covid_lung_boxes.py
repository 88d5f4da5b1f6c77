"""COVID-19 lung bounding boxes (``covid_lung_boxes/``, GeneralBlockchain, COCO format).

Layout: ``images/*.jpg``; ``annotations.json`` (COCO: ``images`` with ``file_name``, ``width``,
``height`` and the covid-chestxray-dataset row in ``metadata``; ``annotations`` with
``bbox`` = [x, y, w, h] in stored-image pixels and ``category_id`` 1 Right Lung / 2 Left Lung);
``metadata.csv`` (the same table). Only the two lungs are annotated; the one annotation without a
``category_id`` takes the lung its image still lacks (or, if both lack one, the image side: the
patient's right lung is on the image's left).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crrg.data.readers import covid_finding_labels, covid_licence, limited
from crrg.data.records import Box, Record, clip_box, ordered_regions

SOURCE = "covid_lung_boxes"
LICENCE = "lung boxes CC BY 4.0 (GeneralBlockchain covid-19-chest-xray-lung-bounding-boxes-dataset)"


def _category_names(coco: dict[str, Any]) -> dict[int, str]:
    names: dict[int, str] = {}
    for cat in coco.get("categories", []):
        name = str(cat["name"]).strip().lower()
        if name not in ("right lung", "left lung"):
            raise ValueError(f"{SOURCE}: unexpected category {cat['name']!r}; expected Right/Left Lung")
        names[int(cat["id"])] = name
    return names


def _lung_boxes(annotations: list[dict[str, Any]], names: dict[int, str], width: int,
                height: int) -> dict[str, Box]:
    boxes: dict[str, Box] = {}
    unnamed: list[Box] = []
    for ann in annotations:
        x, y, w, h = (float(v) for v in ann["bbox"])
        box = clip_box((x, y, x + w, y + h), width, height)
        if box is None:
            continue
        if "category_id" in ann:
            boxes[names[int(ann["category_id"])]] = box
        else:
            unnamed.append(box)
    for box in sorted(unnamed, key=lambda b: b[0]):
        missing = [n for n in ("right lung", "left lung") if n not in boxes]
        if missing:
            boxes[missing[0]] = box
    return {name: boxes[name] for name in ordered_regions(boxes)}


def read(root: Path, limit: int | None = None) -> Iterator[Record]:
    path = root / "annotations.json"
    if not path.is_file():
        raise FileNotFoundError(f"{SOURCE}: expected COCO annotations at {path}")
    coco = json.loads(path.read_text())
    names = _category_names(coco)
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in coco["annotations"]:
        by_image[int(ann["image_id"])].append(ann)

    def records() -> Iterator[Record]:
        for info in coco["images"]:
            image = root / "images" / Path(info["file_name"]).name
            width, height = int(info["width"]), int(info["height"])
            meta = info.get("metadata") or {}
            boxes = _lung_boxes(by_image.get(int(info["id"]), []), names, width, height)
            notes = (meta.get("clinical_notes") or "").strip()
            yield Record(
                source=SOURCE, patient=str(meta.get("patientid") or image.stem), image=image,
                width=width, height=height, boxes=boxes, annotated=tuple(boxes),
                labels=covid_finding_labels(meta.get("finding") or ""), text=notes or None,
                text_kind="clinical_notes" if notes else None, study=image.stem,
                licence=covid_licence(meta.get("license") or "", LICENCE),
                view=meta.get("view") or None, extra={"finding": meta.get("finding") or ""},
            ).validate()

    return limited(records(), limit)
