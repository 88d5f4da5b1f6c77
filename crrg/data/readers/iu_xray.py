"""Indiana University chest X-ray collection (Open-i) reports (``iu_xray/``).

Layout: ``NLMCXR_reports.tgz`` holding ``ecgen-radiology/<n>.xml`` (read straight from the
archive: ``uId``, ``AbstractText`` sections COMPARISON / INDICATION / FINDINGS / IMPRESSION,
``MeSH`` major / automatic terms, ``parentImage`` ids such as ``CXR2384_IM-0942-1001``);
``r2gen_annotation.json`` (R2Gen split: entries with ``id`` = the image id without its last part,
e.g. ``CXR2384_IM-0942``); ``nlmcxr_tsne_pa.csv.gz`` (``imageid``, ``tsne-view`` PA / L);
``nlmcxr_dicom_metadata.csv.gz`` (DICOM headers, ``View Position``).

One record per report; ``patient`` = ``study`` = the report's uId (one report per patient).
``split`` is R2Gen's (``None`` for the ~1,000 reports R2Gen left out). Images are not part of the
shared data: pass ``images=DIR`` to pair each report with its frontal image, found as
``DIR/<parentImage id>.{png,jpg,jpeg,dcm}`` (Open-i layout) or ``DIR/<r2gen id>/<k>.png`` (R2Gen
layout, ``k`` = the image's position in the report's XML, an assumption). The frontal image is the
first ``parentImage`` whose t-SNE view is PA, else whose DICOM View Position is PA/AP, else the
first not known to be lateral.
"""

from __future__ import annotations

import json
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crrg.data.readers import NORMAL_LABELS, image_size, limited, read_csv
from crrg.data.records import Record

SOURCE = "iu_xray"
LICENCE = "reports CC BY-NC-ND 4.0 (Open-i / NLM, Indiana University)"
REPORTS = "NLMCXR_reports.tgz"
R2GEN = "r2gen_annotation.json"
VIEWS = "nlmcxr_tsne_pa.csv.gz"
DICOM_META = "nlmcxr_dicom_metadata.csv.gz"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validate": "val", "test": "test"}


def _clean(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def parse_report(xml_text: bytes | str) -> dict[str, Any]:
    """Sections, MeSH terms and image ids of one ecgen-radiology XML report."""
    root = ET.fromstring(xml_text)
    uid = root.find("uId")
    sections = {(e.get("Label") or "").lower(): _clean(e.text) for e in root.iter("AbstractText")}
    mesh = root.find("MeSH")
    return {
        "uid": uid.get("id") if uid is not None else None,
        "findings": sections.get("findings", ""),
        "impression": sections.get("impression", ""),
        "indication": sections.get("indication", ""),
        "comparison": sections.get("comparison", ""),
        "mesh_major": [_clean(e.text) for e in mesh.findall("major")] if mesh is not None else [],
        "mesh_automatic": [_clean(e.text) for e in mesh.findall("automatic")] if mesh is not None else [],
        "images": [e.get("id") for e in root.findall("parentImage") if e.get("id")],
    }


def iter_reports(archive: Path) -> Iterator[dict[str, Any]]:
    """Parsed reports, in archive order, read from the .tgz without extracting it."""
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".xml"):
                handle = tar.extractfile(member)
                if handle is not None:
                    yield parse_report(handle.read())


def load_views(root: Path) -> dict[str, str]:
    """Image id -> "frontal" / "lateral" (t-SNE view first, DICOM View Position second)."""
    views: dict[str, str] = {}
    if (root / DICOM_META).is_file():
        for row in read_csv(root / DICOM_META):
            position = (row.get("View Position") or "").strip().upper()
            if position in ("PA", "AP"):
                views[row["imageid"]] = "frontal"
            elif position:
                views[row["imageid"]] = "lateral"
    if (root / VIEWS).is_file():
        for row in read_csv(root / VIEWS):
            views[row["imageid"]] = "frontal" if row["tsne-view"].strip().upper() == "PA" else "lateral"
    return views


def frontal_image(image_ids: list[str], views: dict[str, str]) -> str | None:
    for wanted in ("frontal", None):
        for image_id in image_ids:
            if views.get(image_id) == wanted:
                return image_id
    return None


def load_r2gen(root: Path) -> dict[str, tuple[str, str]]:
    """R2Gen id -> (split, report text)."""
    path = root / R2GEN
    if not path.is_file():
        return {}
    out: dict[str, tuple[str, str]] = {}
    for split, entries in json.loads(path.read_text()).items():
        for entry in entries:
            out[entry["id"]] = (SPLIT_NAMES.get(split, split), entry.get("report", ""))
    return out


def find_image(images: Path, image_id: str, position: int) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        if (images / f"{image_id}{suffix}").is_file():
            return images / f"{image_id}{suffix}"
    candidate = images / image_id.rsplit("-", 1)[0] / f"{position}.png"
    return candidate if candidate.is_file() else None


def _size(path: Path) -> tuple[int, int]:
    if path.suffix.lower() == ".dcm":
        import pydicom

        header = pydicom.dcmread(path, stop_before_pixels=True)
        return int(header.Columns), int(header.Rows)
    return image_size(path)


def to_record(report: dict[str, Any], r2gen: dict[str, tuple[str, str]], views: dict[str, str],
              images: Path | None) -> Record:
    uid = report["uid"]
    ids = report["images"]
    r2gen_id = next((i.rsplit("-", 1)[0] for i in ids if i.rsplit("-", 1)[0] in r2gen), None)
    frontal = frontal_image(ids, views)
    path = find_image(images, frontal, ids.index(frontal)) if images and frontal else None
    width, height = _size(path) if path else (None, None)
    normal = any(term.lower() == "normal" for term in report["mesh_major"])
    extra = {k: report[k] for k in ("impression", "indication", "comparison", "mesh_major", "mesh_automatic")}
    extra.update({"images": ids, "frontal": frontal, "r2gen_id": r2gen_id})
    return Record(
        source=SOURCE, patient=uid, image=path, width=width, height=height,
        labels=dict(NORMAL_LABELS) if normal else {}, text=report["findings"] or None,
        text_kind="report", study=uid, split=r2gen[r2gen_id][0] if r2gen_id else None,
        licence=LICENCE, view="frontal" if frontal and views.get(frontal) == "frontal" else None,
        extra=extra,
    ).validate()


def read(root: Path, limit: int | None = None, images: str | Path | None = None) -> Iterator[Record]:
    archive = root / REPORTS
    if not archive.is_file():
        raise FileNotFoundError(f"{SOURCE}: expected the Open-i report archive {archive}")
    image_dir = Path(images) if images else None
    if image_dir is not None and not image_dir.is_dir():
        raise FileNotFoundError(f"{SOURCE}: image folder {image_dir} not found")
    r2gen, views = load_r2gen(root), load_views(root)
    reports = (r for r in iter_reports(archive) if r["uid"])
    return limited((to_record(r, r2gen, views, image_dir) for r in reports), limit)
