"""Read every dataset under a data folder into the jsonl files training uses
(:func:`prepare_data`; the script is :mod:`train.prepare`).

Writes into ``out``:

- ``regions.jsonl``: one line per image with region boxes: ``image``, ``source``, ``width``,
  ``height``, ``split``, ``boxes`` {region: [x1, y1, x2, y2]} (stored-image pixels), ``annotated``
  (regions with a box; any other region is unknown, never background), ``derived`` (boxes from
  the silver rules of :mod:`crrg.data.silver`), ``labels``, ``patient`` (+ ``region_abnormal``
  where the source localises findings).
- ``sentences.jsonl``: one line per report sentence (IU X-ray findings; MIMIC-CXR when given):
  ``report``, ``index``, ``text``, ``regions``, ``abnormal``, ``findings``, ``split`` (+ ``source``,
  ``image`` when the report's frontal image is known). MIMIC sentences come from the Chest
  ImaGenome phrases (regions and abnormality given there) when scene graphs exist.
- ``images.jsonl``: every image with labels or paired text: ``labels``, ``abnormal`` (image level:
  true / false / null), ``region_status`` {region: normal | abnormal | unknown}, ``split``,
  ``text`` + ``text_kind`` where real text exists (COVID sets: clinical notes, not reports),
  ``finding_boxes`` [{finding, box, kind}] where the source boxes a finding on an image without
  region boxes (TBX11K TB areas as "opacity"; region labels come later, against the detector's
  boxes, through :func:`crrg.data.readers.tbx11k.region_labels`), ``same_film_as`` [image] where
  the same film is in another source (:mod:`crrg.data.duplicates`; split ``excluded``).
- ``meta.json``: the data root the image paths are relative to, the counts and the policies;
  ``summary.txt``; ``preview/*.png`` with ``preview=N`` (solid boxes: mask-backed or expert;
  dashed: rule-derived).

Region statuses from image labels (weak, image-level): a normal study (``no finding`` = 1) makes
all 29 regions normal; pneumonia / COVID-19 / lung opacity / consolidation make the lung regions
(:data:`crrg.regions.LUNG_REGIONS`) abnormal — at least one of them is, which one is not known;
a nodule (JSRT, position unknown) leaves every region unknown with the image abnormal. Localised
statuses from the source (ImaGenome, COVID-anatomy lesion masks) override these.

NIH ChestX-ray14 labels are image-level (:data:`crrg.labels.NIH_MAP`), so the rules above apply
to them as to any image label; TBX11K images (tuberculosis, boxes but no region boxes) keep every
region unknown here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crrg.data import sentences as text_rules
from crrg.data.readers import READER_MODULES, read_source
from crrg.data.records import Record
from crrg.data.duplicates import same_films
from crrg.data.splits import POLICIES, assign_splits, follow_same_films
from crrg.labels import FINDINGS, UNREPORTED
from crrg.regions import LUNG_REGIONS, REGIONS

logger = logging.getLogger("train.preparation")

LUNG_DISEASE = ("pneumonia", "covid-19", "lung opacity", "consolidation")
NON_PATHOLOGY = ("no finding", "support devices")


def default_data_dir() -> Path:
    """``CRRG_DATA``, else ``../shared/data`` next to the repository."""
    return Path(os.environ.get("CRRG_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def image_ref(path: Path | None, data_root: Path) -> str | None:
    """Image path relative to the data root when inside it, else absolute."""
    if path is None:
        return None
    path = path.resolve()
    try:
        return path.relative_to(data_root).as_posix()
    except ValueError:
        return path.as_posix()


def read_all(data: Path, sources: list[str], limit: int | None, iu_images: Path | None,
             mimic: Path | None) -> Iterator[Record]:
    for source in sources:
        root = mimic if source == "mimic_cxr" and mimic else data / source
        if not root.exists():
            logger.info("%s: %s not found, skipped", source, root)
            continue
        options = {"images": iu_images} if source == "iu_xray" and iu_images else {}
        start = time.perf_counter()
        count = 0
        for record in read_source(source, root, limit=limit, **options):
            count += 1
            yield record
        logger.info("%s: %d records in %.1f s", source, count, time.perf_counter() - start)


def image_abnormal(labels: dict[str, int]) -> bool | None:
    if any(v == 1 for k, v in labels.items() if k not in NON_PATHOLOGY):
        return True
    return False if labels.get("no finding") == 1 else None


def record_region_status(record: Record) -> dict[str, str]:
    """normal / abnormal / unknown per region (rules in the module docstring)."""
    status = dict.fromkeys(REGIONS, "unknown")
    if record.labels.get("no finding") == 1:
        status = dict.fromkeys(REGIONS, "normal")
    elif any(record.labels.get(f) == 1 for f in LUNG_DISEASE):
        status.update(dict.fromkeys(LUNG_REGIONS, "abnormal"))
    if record.region_abnormal:
        for region in LUNG_REGIONS if record.source == "covid_anatomy" else ():
            status[region] = "unknown"  # lesion masks localise: unmasked lung regions are unknown
        status.update({r: "abnormal" if a else "normal" for r, a in record.region_abnormal.items()})
    return status


def fill_report_labels(record: Record) -> None:
    """Labels of a report-only study from its text (findings named positively)."""
    if record.text_kind == "report" and record.text and not record.labels:
        record.labels = {name: 1 for name in text_rules.extract_findings(record.text)}


def region_line(record: Record, split: str, data: Path) -> dict[str, Any]:
    line = {
        "image": image_ref(record.image, data), "source": record.source, "width": record.width,
        "height": record.height, "split": split,
        "boxes": {k: list(v) for k, v in record.boxes.items()}, "annotated": list(record.annotated),
        "derived": list(record.derived), "labels": record.labels, "patient": record.patient,
    }
    if record.region_abnormal:
        line["region_abnormal"] = record.region_abnormal
    return line


def image_line(record: Record, split: str, data: Path) -> dict[str, Any]:
    line = {
        "image": image_ref(record.image, data), "source": record.source, "width": record.width,
        "height": record.height, "split": split, "labels": record.labels,
        "abnormal": image_abnormal(record.labels), "region_status": record_region_status(record),
        "patient": record.patient, "licence": record.licence,
    }
    if record.text:
        line.update({"text": record.text, "text_kind": record.text_kind})
    if record.finding_boxes:
        line["finding_boxes"] = [{"finding": f.finding, "box": list(f.box), "kind": f.kind}
                                 for f in record.finding_boxes]
    return line


def sentence_lines(record: Record, split: str, data: Path) -> list[dict[str, Any]]:
    base = {"report": record.study, "source": record.source, "split": split,
            "image": image_ref(record.image, data)}
    if record.sentences:
        return [{**base, "index": i, "text": s.text, "regions": list(s.regions),
                 "abnormal": bool(s.abnormal), "findings": list(s.findings)}
                for i, s in enumerate(record.sentences)]
    return [{**base, "index": i, "text": s, "regions": text_rules.sentence_regions(s),
             "abnormal": text_rules.is_abnormal(s), "findings": text_rules.extract_findings(s)}
            for i, s in enumerate(text_rules.split_sentences(record.text or ""))]


class Summary:
    """Counts gathered while writing."""

    def __init__(self) -> None:
        self.records: Counter[tuple[str, str]] = Counter()
        self.files: Counter[str] = Counter()
        self.regions: dict[str, Counter[str]] = defaultdict(Counter)
        self.derived: dict[str, Counter[str]] = defaultdict(Counter)
        self.sentences: Counter[tuple[str, str]] = Counter()
        self.same_films = 0  # films also in another source (crrg.data.duplicates)

    def add_sentences(self, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            self.sentences[(line["split"], "all")] += 1
            self.sentences[(line["split"], "with region")] += bool(line["regions"])
            self.sentences[(line["split"], "abnormal")] += bool(line["abnormal"])

    def as_dict(self) -> dict[str, Any]:
        by_source: dict[str, dict[str, int]] = defaultdict(dict)
        for (source, split), n in sorted(self.records.items()):
            by_source[source][split] = n
        return {"records": by_source, "files": dict(self.files),
                "regions": {s: dict(c) for s, c in self.regions.items()},
                "derived": {s: dict(c) for s, c in self.derived.items()},
                "sentences": {f"{a}/{b}": n for (a, b), n in sorted(self.sentences.items())},
                "same_films": self.same_films}

    def text(self) -> str:
        out = ["records per source and split:"]
        for source, splits in self.as_dict()["records"].items():
            out.append(f"  {source:18s} " + "  ".join(f"{k}={v}" for k, v in splits.items()))
        out.append("lines written: " + ", ".join(f"{k}={v}" for k, v in sorted(self.files.items())))
        out.append(f"films also in another source (excluded; the patient follows the copy's split): "
                   f"{self.same_films}")
        out.append("images with a box per region (of which rule-derived):")
        for source, counts in self.regions.items():
            cells = [f"{r}={counts[r]}({self.derived[source][r]})" for r in REGIONS if counts[r]]
            out.append(f"  {source}: " + ", ".join(cells))
        out.append("report sentences per split (with >= 1 region / abnormal):")
        for split in sorted({s for s, _ in self.sentences}):
            n = self.sentences[(split, "all")]
            with_region = self.sentences[(split, "with region")]
            abnormal = self.sentences[(split, "abnormal")]
            out.append(f"  {split}: {n} sentences, {with_region} ({100 * with_region / max(n, 1):.1f} %) "
                       f"with a region, {abnormal} ({100 * abnormal / max(n, 1):.1f} %) abnormal")
        return "\n".join(out)


def prepare_data(data: Path, out: Path, sources: list[str] | None = None, limit: int | None = None,
            preview: int = 0, iu_images: Path | None = None, mimic: Path | None = None) -> Summary:
    """Read, split and write everything; returns the counts (also in ``meta.json``)."""
    data = data.resolve()
    sources = sources or list(READER_MODULES)
    if mimic is None and (data / "mimic_cxr").exists():
        mimic = data / "mimic_cxr"
    records = list(read_all(data, sources, limit, iu_images, mimic))
    copies = same_films(records)
    splits = follow_same_films(records, assign_splits(records), copies)
    out.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    seen_reports: set[tuple[str, str | None]] = set()
    with (open(out / "regions.jsonl", "w") as regions_f, open(out / "images.jsonl", "w") as images_f,
          open(out / "sentences.jsonl", "w") as sentences_f):
        for record in records:
            split = splits[record.key]
            summary.records[(record.source, split)] += 1
            fill_report_labels(record)
            if record.boxes:
                regions_f.write(json.dumps(region_line(record, split, data)) + "\n")
                summary.files["regions"] += 1
                summary.regions[record.source].update(record.annotated)
                summary.derived[record.source].update(record.derived)
            if record.image is not None and (record.labels or record.text):
                line = image_line(record, split, data)
                if record.key in copies:
                    line["same_film_as"] = [image_ref(Path(k), data) for k in copies[record.key]]
                    summary.same_films += 1
                images_f.write(json.dumps(line) + "\n")
                summary.files["images"] += 1
            if record.text_kind == "report" and (record.source, record.study) not in seen_reports:
                seen_reports.add((record.source, record.study))
                lines = sentence_lines(record, split, data)
                sentences_f.writelines(json.dumps(line) + "\n" for line in lines)
                summary.files["sentences"] += len(lines)
                summary.add_sentences(lines)
    write_meta(out, data, summary, limit)
    if preview:
        render_previews(records, out / "preview", preview)
    return summary


PREVIEW_PANELS: tuple[tuple[str, ...], ...] = (
    tuple(r for r in REGIONS[:16] if "zone" in r or r.endswith(" lung")),
    tuple(r for r in REGIONS[:16] if "zone" not in r and not r.endswith(" lung")) + ("abdomen",),
    ("mediastinum", "upper mediastinum", "cardiac silhouette", "trachea", "spine",
     "right clavicle", "left clavicle"),
    ("aortic arch", "svc", "cavoatrial junction", "right atrium", "carina", "trachea"),
)


def render_previews(records: list[Record], folder: Path, per_source: int) -> list[Path]:
    """Overlays of the first ``per_source`` boxed images of each box source (4 panels each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    taken: Counter[str] = Counter()
    written = []
    for record in records:
        if not record.boxes or record.image is None or taken[record.source] >= per_source:
            continue
        taken[record.source] += 1
        with Image.open(record.image) as image:
            pixels = np.asarray(image.convert("L"))
        fig, axes = plt.subplots(2, 2, figsize=(12, 12.6))
        for ax, panel in zip(axes.ravel(), PREVIEW_PANELS):
            ax.imshow(pixels, cmap="gray")
            ax.axis("off")
            for k, name in enumerate(r for r in panel if r in record.boxes):
                x1, y1, x2, y2 = record.boxes[name]
                colour = plt.cm.tab10(k % 10)
                style = "--" if name in record.derived else "-"
                ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour,
                                           lw=1.5, ls=style))
                ax.text(x1 + 2, y1 + 2, name, color=colour, fontsize=8, va="top")
        fig.suptitle(f"{record.source} {record.study} (solid: mask/expert, dashed: rule)", fontsize=10)
        fig.tight_layout()
        path = folder / f"{record.source}_{taken[record.source]}.png"
        fig.savefig(path, dpi=70)
        plt.close(fig)
        written.append(path)
    return written


def write_meta(out: Path, data: Path, summary: Summary, limit: int | None) -> None:
    meta = {
        "data_root": data.as_posix(),
        "image_paths": "relative to data_root (absolute when outside it)",
        "box_format": "xyxy, stored-image pixels, continuous (mask columns a..b -> x1=a, x2=b+1)",
        "limit_per_source": limit,
        "split_policies": {k: vars(v) for k, v in POLICIES.items()},
        "label_values": "1 present, 0 absent, -1 uncertain; missing = unknown",
        "findings": list(FINDINGS),
        "unreported_labels": list(UNREPORTED),
        "regions": list(REGIONS),
        "summary": summary.as_dict(),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "summary.txt").write_text(summary.text() + "\n")
