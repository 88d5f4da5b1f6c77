"""NIH ChestX-ray14 frontal radiographs with NIH's 14 image labels (``nih_cxr14/``).

Layout: ``images/<patient>_<follow-up>.jpg`` (512 px) and ``labels.csv`` with ``image`` (path
relative to the folder), ``patient_id``, ``finding_labels`` (NIH's ``A|B`` form or ``No Finding``)
and one 0/1 column per NIH label (:data:`crrg.labels.NIH_LABELS`).

Labels are image-level only, mapped once through :data:`crrg.labels.NIH_MAP` (a "No Finding" image:
``no finding`` 1 and every finding NIH assesses 0; findings NIH does not assess stay unknown).
No region boxes and no localised findings. The patient is ``patient_id`` (splits by patient).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from crrg.data.readers import image_size, limited, read_csv
from crrg.data.records import Record
from crrg.labels import NIH_LABELS, nih_labels

SOURCE = "nih_cxr14"
LICENCE = ("NIH Clinical Center ChestX-ray14 (Wang et al., CVPR 2017): no restriction; cite the paper "
           "and credit the NIH Clinical Center")
NO_FINDING = "No Finding"


def _flags(row: dict[str, str], table: Path) -> dict[str, int]:
    """The 14 0/1 flags, checked against ``finding_labels``."""
    flags = {name: int(row[name]) for name in NIH_LABELS}
    named = row["finding_labels"].strip()
    listed = set() if named == NO_FINDING else {n.strip() for n in named.split("|")}
    if listed != {name for name, v in flags.items() if v == 1}:
        raise ValueError(f"{table}: {row['image']}: finding_labels {named!r} disagree with the 0/1 columns")
    return flags


def read_one(root: Path, row: dict[str, str], table: Path) -> Record:
    path = root / row["image"]
    width, height = image_size(path)
    patient = row["patient_id"].strip()
    if not path.stem.startswith(f"{patient}_"):
        raise ValueError(f"{table}: {row['image']}: patient_id {patient!r} is not the file name's first part")
    return Record(
        source=SOURCE, patient=patient, image=path, width=width, height=height,
        labels=nih_labels(_flags(row, table)), study=path.stem, licence=LICENCE,
        extra={"finding_labels": row["finding_labels"].strip()},
    ).validate()


def read(root: Path, limit: int | None = None) -> Iterator[Record]:
    table = root / "labels.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{SOURCE}: expected {table} (image, patient_id, finding_labels, 14 NIH labels)")
    rows = read_csv(table)
    absent = [c for c in ("image", "patient_id", "finding_labels", *NIH_LABELS) if rows and c not in rows[0]]
    if absent:
        raise ValueError(f"{SOURCE}: {table} lacks columns {absent}")
    return limited((read_one(root, row, table) for row in rows), limit)
