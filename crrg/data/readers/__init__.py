"""One reader per dataset folder, all yielding :class:`crrg.data.records.Record`.

Each reader module has ``SOURCE`` (the dataset folder name), ``LICENCE`` and
``read(root, limit=None, **options) -> Iterator[Record]`` where ``root`` is that dataset's folder.
:func:`read_source` picks the module by source name (imported lazily, so the helpers below can be
shared without import cycles).
"""

from __future__ import annotations

import csv
import gzip
import importlib
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from PIL import Image

from crrg.data.records import SOURCES, Record
from crrg.labels import FINDINGS

_SKIP = ("files", "scene_graph")  # huge image / scene-graph folders: never searched

READER_MODULES: dict[str, str] = {
    "jsrt_scr": "jsrt",
    "covid_lung_boxes": "covid_lung_boxes",
    "covid_anatomy": "covid_anatomy",
    "kermany_pneumonia": "kermany",
    "covid_radiography": "covid_radiography",
    "iu_xray": "iu_xray",
    "mimic_cxr": "mimic",
    "nih_cxr14": "nih_cxr14",
    "tbx11k": "tbx11k",
}
assert set(READER_MODULES) == set(SOURCES)

# Labels of a study read as normal: every finding absent (support devices stay unknown).
NORMAL_LABELS: dict[str, int] = {f: 0 for f in FINDINGS if f not in ("no finding", "support devices")}
NORMAL_LABELS["no finding"] = 1

# covid-chestxray-dataset "finding" values naming a pneumonia other than COVID-19.
_OTHER_PNEUMONIA = (
    "pneumocystis", "streptococcus", "sars", "klebsiella", "mycoplasma", "legionella", "e.coli",
    "varicella", "influenza", "chlamydophila", "bacterial", "lipoid", "mers", "staphylococcus",
    "aspergillosis", "nocardia", "herpes", "tuberculosis",
)


def read_source(source: str, root: str | Path, limit: int | None = None, **options: Any) -> Iterator[Record]:
    """Records of one source read from its folder ``root``."""
    if source not in READER_MODULES:
        raise ValueError(f"unknown source {source!r}; valid sources: {', '.join(READER_MODULES)}")
    module = importlib.import_module(f"crrg.data.readers.{READER_MODULES[source]}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{source}: folder {root} not found")
    return module.read(root, limit=limit, **options)


def limited(items: Iterable[Record], limit: int | None) -> Iterator[Record]:
    """The first ``limit`` records (all when ``limit`` is None)."""
    for i, item in enumerate(items):
        if limit is not None and i >= limit:
            return
        yield item


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header (no pixel decoding)."""
    with Image.open(path) as image:
        return image.size


def open_text(path: Path) -> IO[str]:
    """A text handle on a plain or gzip-compressed file."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open_text(path) as handle:
        return list(csv.DictReader(handle))


def find_file(root: Path, names: Iterable[str], max_depth: int = 3) -> Path | None:
    """The first file under ``root`` (breadth-first, up to ``max_depth``) named one of ``names``."""
    wanted = list(names)
    level = [root]
    for _ in range(max_depth + 1):
        for folder in level:
            for name in wanted:
                if (folder / name).is_file():
                    return folder / name
        level = [p for folder in level for p in sorted(folder.iterdir()) if p.is_dir() and p.name not in _SKIP]
    return None


def covid_finding_labels(finding: str) -> dict[str, int]:
    """Image labels from the covid-chestxray-dataset ``finding`` column.

    COVID-19 (alone or with ARDS) -> covid-19 and pneumonia (the dataset files COVID-19 under
    Pneumonia/Viral); a named other pathogen -> pneumonia, not COVID-19; ARDS -> lung opacity;
    "No Finding" -> normal; "todo", "Unknown" and blanks -> no labels.
    """
    text = finding.strip().lower()
    if not text or text in ("todo", "unknown"):
        return {}
    if text == "no finding":
        return dict(NORMAL_LABELS)
    labels: dict[str, int] = {"no finding": 0}
    if "covid" in text:
        labels.update({"covid-19": 1, "pneumonia": 1})
    elif any(name in text for name in _OTHER_PNEUMONIA):
        labels.update({"pneumonia": 1, "covid-19": 0})
    elif "pneumonia" in text:
        labels["pneumonia"] = 1
    if "ards" in text:
        labels["lung opacity"] = 1
    return labels


def covid_licence(image_licence: str, annotation: str) -> str:
    """Licence line of a covid-chestxray-dataset image with third-party annotations."""
    image = image_licence.strip() or "unspecified (see the image's source url)"
    return f"image: {image}; {annotation}"
