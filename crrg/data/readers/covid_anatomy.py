"""COVID-19 chest X-ray segmentations (``covid_anatomy/``, GeneralBlockchain).

Layout: ``images/*.jpg``; ``masks/*.png`` (1-bit crops); ``structure.csv`` with one row per mask:
``Template Name`` (Right Lung, Left Lung, Cardiomediastinum, Airways, Ground Glass Opacities,
Consolidation, tubes and lines, ...), ``Image`` and ``Mask`` paths, ``Resolution`` (WxH of the
image) and the crop placement ``Top``, ``Left``, ``Width``, ``Height``; ``metadata.csv`` (the
covid-chestxray-dataset table: patientid, finding, view, license, clinical_notes), joined on the
file stem.

In this copy the lung mask PNGs are empty, but their placement rectangles are the lungs' tight
boxes (the non-empty masks all touch their crop's four edges), so lungs are expert *boxes*; the
lung fields used to shape zones are those boxes minus the cardiomediastinum mask. Cardiomediastinum
and airway masks give the mediastinal regions and the trachea; no clavicles. Ground-glass,
consolidation, effusion and pneumothorax masks mark the lung regions they cover as abnormal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from crrg.data.readers import covid_finding_labels, covid_licence, limited, read_csv
from crrg.data.records import Box, Record
from crrg.data.silver import OrganMasks, box_mask, derive_boxes
from crrg.regions import LUNG_REGIONS

SOURCE = "covid_anatomy"
LICENCE = "annotations CC BY 4.0 (GeneralBlockchain covid-19-chest-xray-segmentations-dataset)"
ORGANS = {"Right Lung": "right_lung", "Left Lung": "left_lung",
          "Cardiomediastinum": "cardiomediastinum", "Airways": "airways"}
LESIONS = ("Ground Glass Opacities", "Consolidation", "Pleural Effusion", "Pneumothorax")
LESION_COVER = 0.05  # a lung region is abnormal when lesions cover this fraction of its box


def _placement(row: dict[str, str]) -> tuple[int, int, int, int]:
    """(left, top, width, height) of a mask crop."""
    return int(row["Left"]), int(row["Top"]), int(row["Width"]), int(row["Height"])


def _place_mask(root: Path, row: dict[str, str], width: int, height: int) -> np.ndarray | None:
    """The crop pasted into a full-size boolean mask (``None`` when the file is missing)."""
    path = root / row["Mask"] if row.get("Mask") else None
    if path is None or not path.is_file():
        return None
    left, top, w, h = _placement(row)
    with Image.open(path) as image:
        crop = np.asarray(image.convert("L")) > 0
    full = np.zeros((height, width), bool)
    full[top:top + h, left:left + w] = crop[: max(0, height - top), : max(0, width - left)]
    return full


def _lesion_regions(lesion: np.ndarray | None, boxes: dict[str, Box]) -> dict[str, bool]:
    if lesion is None:
        return {}
    out: dict[str, bool] = {}
    for name in LUNG_REGIONS:
        if name in boxes:
            x1, y1, x2, y2 = (int(round(v)) for v in boxes[name])
            area = max(1, (x2 - x1) * (y2 - y1))
            if lesion[y1:y2, x1:x2].sum() >= LESION_COVER * area:
                out[name] = True
    return out


def read_one(root: Path, image_rel: str, rows: list[dict[str, str]], meta: dict[str, str] | None) -> Record:
    path = root / image_rel
    with Image.open(path) as image:
        width, height = image.size
    masks: dict[str, np.ndarray | None] = {}
    lung_boxes: dict[str, Box] = {}
    lesion = None
    for row in rows:
        name = row["Template Name"]
        if name in ("Right Lung", "Left Lung"):
            left, top, w, h = _placement(row)
            lung_boxes[name.lower()] = (float(left), float(top), float(left + w), float(top + h))
        elif name in ORGANS:
            masks[ORGANS[name]] = _place_mask(root, row, width, height)
        elif name in LESIONS:
            found = _place_mask(root, row, width, height)
            if found is not None:
                lesion = found if lesion is None else lesion | found
    cm = masks.get("cardiomediastinum")
    for name, box in lung_boxes.items():
        field = name.replace(" ", "_")
        masks[field] = box_mask(box, height, width) & (~cm if cm is not None else True)
    silver = derive_boxes(OrganMasks(height=height, width=width, **masks), lung_boxes=lung_boxes)
    meta = meta or {}
    notes = (meta.get("clinical_notes") or "").strip()
    return Record(
        source=SOURCE, patient=str(meta.get("patientid") or path.stem), image=path,
        width=width, height=height, boxes=silver.boxes, annotated=tuple(silver.boxes),
        derived=silver.derived, labels=covid_finding_labels(meta.get("finding", "")),
        region_abnormal=_lesion_regions(lesion, silver.boxes),
        text=notes or None, text_kind="clinical_notes" if notes else None, study=path.stem,
        licence=covid_licence(meta.get("license", ""), LICENCE), view=meta.get("view") or None,
        extra={"finding": meta.get("finding", "")},
    ).validate()


def read(root: Path, limit: int | None = None) -> Iterator[Record]:
    table = root / "structure.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{SOURCE}: expected {table}")
    by_image: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in read_csv(table):
        by_image[row["Image"]].append(row)
    meta_path = root / "metadata.csv"
    meta = {Path(m["filename"]).stem: m for m in read_csv(meta_path)} if meta_path.is_file() else {}
    return limited(
        (read_one(root, image, rows, meta.get(Path(image).stem)) for image, rows in by_image.items()),
        limit,
    )
