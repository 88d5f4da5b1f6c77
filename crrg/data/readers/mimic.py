"""MIMIC-CXR-JPG + MIMIC-CXR reports + Chest ImaGenome silver scene graphs (``mimic_cxr/``).

Credentialed PhysioNet data, read in their published layouts wherever they sit under ``root``
(searched a few levels deep, never inside ``files/``):

- MIMIC-CXR-JPG: ``mimic-cxr-2.0.0-split.csv[.gz]`` (dicom_id, study_id, subject_id, split
  train/validate/test), ``mimic-cxr-2.0.0-metadata.csv[.gz]`` (ViewPosition, Rows, Columns),
  ``mimic-cxr-2.0.0-chexpert.csv[.gz]`` (per study: 1.0 / 0.0 / -1.0 / blank), images at
  ``files/p10/p10000032/s50414267/<dicom_id>.jpg`` next to the split file.
- MIMIC-CXR reports: ``files/p10/p10000032/s50414267.txt`` in the JPG tree or in any folder under
  ``root`` that has a ``files/`` folder; the FINDINGS section is the text (IMPRESSION if none).
- Chest ImaGenome: ``silver_dataset/scene_graph/<dicom_id>_SceneGraph.json`` (or
  ``scene_graph.zip``) with ``objects`` (``bbox_name``, ``original_x1/y1/x2/y2`` in image pixels)
  and ``attributes`` (``bbox_name``, ``phrases``, per-phrase ``attributes`` such as
  ``"anatomicalfinding|yes|lung opacity"`` or ``"nlp|yes|abnormal"``);
  ``silver_dataset/splits/images_to_avoid.csv`` (the gold-standard images: skipped, as in RGRG).

With scene graphs: every image that has one, its boxes for the 29 regions (out-of-image boxes
dropped, the rest clipped, as RGRG), region-grounded sentences from the phrases, and
``region_abnormal`` (a region is abnormal when a phrase about it carries ``nlp|yes|abnormal``,
normal otherwise — RGRG's convention). Without them: frontal (PA/AP) images, no boxes.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crrg.data.readers import find_file, image_size, limited, read_csv
from crrg.data.records import Box, Record, SourceSentence, clip_box, ordered_regions
from crrg.labels import FINDINGS
from crrg.regions import REGIONS

logger = logging.getLogger(__name__)

SOURCE = "mimic_cxr"
LICENCE = "PhysioNet Credentialed Health Data License 1.5.0 (MIMIC-CXR, MIMIC-CXR-JPG, Chest ImaGenome)"
SPLIT_NAMES = {"train": "train", "validate": "val", "val": "val", "test": "test"}
# Chest ImaGenome attribute names -> crrg.labels.FINDINGS
ATTRIBUTE_FINDINGS = {
    "lung opacity": "lung opacity", "pleural effusion": "pleural effusion",
    "atelectasis": "atelectasis", "enlarged cardiac silhouette": "cardiomegaly",
    "pneumothorax": "pneumothorax", "consolidation": "consolidation",
    "pulmonary edema/hazy opacity": "edema", "pneumonia": "pneumonia",
    "mass/nodule (not otherwise specified)": "nodule", "lung lesion": "lung lesion",
    "rib fracture": "fracture", "bone fracture": "fracture",
}
_SECTION = re.compile(r"^\s*([A-Z][A-Z /&]+):", re.MULTILINE)


def _find(root: Path, stem: str) -> Path | None:
    return find_file(root, [f"{stem}.csv.gz", f"{stem}.csv"])


def report_sections(text: str) -> dict[str, str]:
    """Upper-case ``NAME:`` headed sections of a MIMIC-CXR report, lower-cased names."""
    marks = list(_SECTION.finditer(text))
    out = {}
    for mark, nxt in zip(marks, marks[1:] + [None]):
        body = text[mark.end(): nxt.start() if nxt else len(text)]
        out[mark.group(1).strip().lower()] = " ".join(body.split())
    return out


class SceneGraphs:
    """Scene graph JSONs from a folder or from ``scene_graph.zip``."""

    def __init__(self, location: Path) -> None:
        self.folder = location if location.is_dir() else None
        self.zip = zipfile.ZipFile(location) if location.is_file() else None
        self.names = {Path(n).name: n for n in self.zip.namelist()} if self.zip else {}

    def get(self, dicom_id: str) -> dict[str, Any] | None:
        name = f"{dicom_id}_SceneGraph.json"
        if self.folder is not None:
            path = self.folder / name
            return json.loads(path.read_text()) if path.is_file() else None
        if self.zip is None or name not in self.names:
            return None
        return json.loads(self.zip.read(self.names[name]))


def find_scene_graphs(root: Path) -> SceneGraphs | None:
    for depth in range(4):
        prefix = "*/" * depth
        for pattern in (f"{prefix}silver_dataset/scene_graph", f"{prefix}silver_dataset/scene_graph.zip"):
            for hit in sorted(root.glob(pattern)):
                return SceneGraphs(hit)
    return None


def scene_boxes(graph: dict[str, Any], width: int, height: int) -> dict[str, Box]:
    boxes: dict[str, Box] = {}
    for obj in graph.get("objects", []):
        name = obj.get("bbox_name")
        if name not in REGIONS:
            continue
        x1, y1, x2, y2 = (float(obj[f"original_{k}"]) for k in ("x1", "y1", "x2", "y2"))
        box = clip_box((x1, y1, x2, y2), width, height)
        if box is not None:
            boxes[name] = box
    return {k: boxes[k] for k in ordered_regions(boxes)}


def scene_sentences(graph: dict[str, Any]) -> tuple[list[SourceSentence], dict[str, bool]]:
    """Region-grounded sentences (identical phrases merged) and per-region abnormality."""
    merged: dict[str, dict[str, Any]] = {}
    abnormal: dict[str, bool] = {}
    for entry in graph.get("attributes", []):
        region = entry.get("bbox_name")
        if region not in REGIONS:
            continue
        phrases = entry.get("phrases", [])
        attributes = entry.get("attributes", [[]] * len(phrases))
        for phrase, attrs in zip(phrases, attributes):
            text = " ".join(str(phrase).split())
            if not text:
                continue
            item = merged.setdefault(
                text.lower(), {"text": text, "regions": set(), "abnormal": False, "findings": set()})
            item["regions"].add(region)
            is_abnormal = "nlp|yes|abnormal" in attrs
            item["abnormal"] |= is_abnormal
            abnormal[region] = abnormal.get(region, False) or is_abnormal
            for attr in attrs:
                category, polarity, name = (attr.split("|") + ["", ""])[:3]
                if polarity != "yes":
                    continue
                finding = "support devices" if category == "tubesandlines" else ATTRIBUTE_FINDINGS.get(name)
                if finding in FINDINGS:
                    item["findings"].add(finding)
    sentences = [
        SourceSentence(text=i["text"], regions=ordered_regions(i["regions"]), abnormal=i["abnormal"],
                 findings=tuple(f for f in FINDINGS if f in i["findings"]))
        for i in merged.values()
    ]
    return sentences, abnormal


def chexpert_labels(row: dict[str, str] | None) -> dict[str, int]:
    labels: dict[str, int] = {}
    for column, value in (row or {}).items():
        name = column.strip().lower()
        if name in FINDINGS and value not in ("", None):
            labels[name] = int(float(value))
    return labels


class _Paths:
    def __init__(self, root: Path) -> None:
        split = _find(root, "mimic-cxr-2.0.0-split")
        if split is None:
            raise FileNotFoundError(f"{SOURCE}: no mimic-cxr-2.0.0-split.csv[.gz] under {root}")
        self.jpg = split.parent
        self.split = split
        self.metadata = _find(root, "mimic-cxr-2.0.0-metadata")
        self.chexpert = _find(root, "mimic-cxr-2.0.0-chexpert")
        extra = [p for p in list(root.glob("*")) + list(root.glob("*/*")) if (p / "files").is_dir()]
        self.report_roots = [self.jpg] + [p for p in extra if p != self.jpg]
        self.graphs = find_scene_graphs(root)
        avoid = find_file(root, ["images_to_avoid.csv"], max_depth=4)
        self.avoid = {r["dicom_id"] for r in read_csv(avoid)} if avoid else set()

    def report(self, subject: str, study: str) -> str | None:
        for base in self.report_roots:
            path = base / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
            if path.is_file():
                return path.read_text(errors="replace")
        return None


def _record(paths: _Paths, row: dict[str, str], meta: dict[str, str],
            labels: dict[str, int]) -> Record | None:
    dicom, study, subject = row["dicom_id"], row["study_id"], row["subject_id"]
    image = paths.jpg / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
    view = (meta.get("ViewPosition") or "").upper() or None
    graph = paths.graphs.get(dicom) if paths.graphs else None
    if paths.graphs and graph is None:
        return None
    if (graph is None and view not in ("PA", "AP")) or not image.is_file():
        return None
    if meta.get("Rows") and meta.get("Columns"):
        width, height = int(float(meta["Columns"])), int(float(meta["Rows"]))
    else:
        width, height = image_size(image)
    report = paths.report(subject, study)
    sections = report_sections(report) if report else {}
    text = sections.get("findings") or sections.get("impression") or None
    boxes = scene_boxes(graph, width, height) if graph else {}
    sentences, abnormal = scene_sentences(graph) if graph else (None, {})
    return Record(
        source=SOURCE, patient=subject, image=image, width=width, height=height, boxes=boxes,
        annotated=tuple(boxes), labels=labels,
        region_abnormal={r: abnormal.get(r, False) for r in boxes} if graph else {},
        text=text, text_kind="report" if text else None, sentences=sentences, study=study,
        split=SPLIT_NAMES.get(row.get("split", ""), None), licence=LICENCE, view=view,
        extra={"dicom_id": dicom, "impression": sections.get("impression", "")},
    ).validate()


def read(root: Path, limit: int | None = None) -> Iterator[Record]:
    paths = _Paths(root)
    meta = {r["dicom_id"]: r for r in read_csv(paths.metadata)} if paths.metadata else {}
    chexpert = {r["study_id"]: r for r in read_csv(paths.chexpert)} if paths.chexpert else {}

    def records() -> Iterator[Record]:
        skipped = 0
        for row in read_csv(paths.split):
            if row["dicom_id"] in paths.avoid:
                continue
            labels = chexpert_labels(chexpert.get(row["study_id"]))
            record = _record(paths, row, meta.get(row["dicom_id"], {}), labels)
            if record is None:
                skipped += 1
                continue
            yield record
        logger.info("%s: skipped %d images (lateral, no scene graph or no JPG)", SOURCE, skipped)

    return limited(records(), limit)
