"""COVID-19 Radiography Database sample (``covid_radiography/``).

Layout: ``COVID/*.jpg`` and ``Normal/*.jpg`` (224 x 224). The database publishes no patient ids
and no split: each image is its own "patient" (so two images of one person may land in different
parts — a limitation of the source) and :mod:`crrg.data.splits` makes a deterministic held-out
test part by hashing the file name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from crrg.data.readers import NORMAL_LABELS, image_size, limited
from crrg.data.records import Record

SOURCE = "covid_radiography"
LICENCE = ("COVID-19 Radiography Database (Chowdhury et al. 2020; Rahman et al. 2021): cite; "
           "images keep their sub-sources' terms")
CLASSES: dict[str, dict[str, int]] = {
    "COVID": {"covid-19": 1, "no finding": 0},
    "Normal": {**NORMAL_LABELS, "covid-19": 0},
}
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def read(root: Path, limit: int | None = None) -> Iterator[Record]:
    found = [c for c in CLASSES if (root / c).is_dir()]
    if not found:
        raise FileNotFoundError(f"{SOURCE}: expected class folders {list(CLASSES)} inside {root}")

    def records() -> Iterator[Record]:
        for klass in found:
            for path in sorted((root / klass).glob("*")):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                width, height = image_size(path)
                yield Record(
                    source=SOURCE, patient=path.stem, image=path, width=width, height=height,
                    labels=dict(CLASSES[klass]), study=path.stem, licence=LICENCE,
                    extra={"class": klass},
                ).validate()

    return limited(records(), limit)
