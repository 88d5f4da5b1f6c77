"""Kermany et al. pediatric pneumonia radiographs (``kermany_pneumonia/``).

Layout: ``{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`` (224 x 224; a 70/15/15 re-split by image,
so one child can appear in several parts). Patient id from the file name: ``person123_bacteria_4``
and ``person123_virus_5`` -> ``person123``; ``IM-0003-0001`` -> ``IM-0003``;
``NORMAL2-IM-0123-0001`` -> ``NORMAL2-IM-0123``. The given folder is kept as ``split``
(:mod:`crrg.data.splits` keeps the test part and re-splits the rest by patient; ``extra
["test_patient"]`` says whether the child also has an image in ``test/``). Pneumonia type
(bacterial / viral, from the file name) goes to ``extra``; all images predate COVID-19.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from crrg.data.readers import NORMAL_LABELS, image_size, limited
from crrg.data.records import Record

SOURCE = "kermany_pneumonia"
LICENCE = "CC BY 4.0 (Kermany et al. 2018)"
FOLDERS = ("train", "val", "test")
CLASSES = ("NORMAL", "PNEUMONIA")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_PERSON = re.compile(r"^(person\d+)_")
_IM = re.compile(r"^((?:NORMAL2-)?IM-\d+)-")


def patient_id(file_name: str) -> str:
    """Patient id encoded in a Kermany file name (the stem when no pattern matches)."""
    for pattern in (_PERSON, _IM):
        match = pattern.match(file_name)
        if match:
            return match.group(1)
    return Path(file_name).stem


def _labels(klass: str) -> dict[str, int]:
    if klass == "NORMAL":
        return {**NORMAL_LABELS, "covid-19": 0}
    return {"pneumonia": 1, "no finding": 0, "covid-19": 0}


def read(root: Path, limit: int | None = None) -> Iterator[Record]:
    found = [f for f in FOLDERS if (root / f).is_dir()]
    if not found:
        raise FileNotFoundError(f"{SOURCE}: expected {FOLDERS} folders with {CLASSES} inside {root}")

    test_patients = {patient_id(p.name) for p in (root / "test").glob("*/*")}

    def records() -> Iterator[Record]:
        for folder in found:
            for klass in CLASSES:
                for path in sorted((root / folder / klass).glob("*")):
                    if path.suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    width, height = image_size(path)
                    kind = next((k for w, k in (("bacteria", "bacterial"), ("virus", "viral"))
                                 if w in path.name), None)
                    yield Record(
                        source=SOURCE, patient=patient_id(path.name), image=path, width=width,
                        height=height, labels=_labels(klass), study=path.stem, split=folder,
                        licence=LICENCE, extra={"class": klass, "pneumonia_type": kind,
                               "test_patient": patient_id(path.name) in test_patients},
                    ).validate()

    return limited(records(), limit)
