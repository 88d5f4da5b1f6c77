"""Deterministic, patient-disjoint train / val / test splits.

A patient's part comes from a hash of ``"<namespace>:<patient id>"`` (SHA-1, first 8 bytes as a
fraction in [0, 1)), so it never depends on reading order, on ``--limit`` or on the machine, and all
images of a patient share it. Per source (:data:`POLICIES`):

=================  ===========================================================================
source             rule
=================  ===========================================================================
iu_xray            R2Gen's split (the standard 7:1:2 by study); reports R2Gen left out -> train
                   (one report per patient, so they never meet a val/test patient)
mimic_cxr          the official mimic-cxr-2.0.0-split (hash by subject_id when missing)
kermany_pneumonia  the given ``test`` folder stays test, untouched; train/val images of a child
                   who also has a test image -> ``excluded`` (never used, so training stays
                   disjoint from test); the rest re-split by child: 15 % val, 85 % train
covid_radiography  no split and no patient ids published: a held-out test part of 15 % and a
                   val part of 10 % by hashing the file name; the rest train
jsrt_scr           hash of the image id: 80 / 10 / 10
covid_lung_boxes,  hash of the covid-chestxray-dataset patientid in one shared namespace, so a
covid_anatomy      patient present in both sets gets the same part in both: 80 / 10 / 10
nih_cxr14          hash of NIH's ``patient_id``: 70 / 15 / 15 (all follow-up films of a patient
                   in one part). Larger val/test parts than the others, and the namespace
                   ``nih_cxr14/8``, so that the rare NIH findings (16 hernia, 36 pneumothorax,
                   40 cardiomegaly images) have positives in val (calibration) and in test
                   (per-finding AUCs): of the namespaces ``nih_cxr14/0`` .. ``/999`` it gives
                   every one of the 14 labels and No Finding at least 85 % of its expected
                   15 % share in both parts (chosen on the label table only, no model; the
                   plain namespace left pneumothorax with no test image)
tbx11k             no patient ids published: hash of the image name (each image its own
                   patient), 70 / 15 / 15 for the same reason (per-image TB-area figures)
=================  ===========================================================================

Across sources (:func:`follow_same_films`): an NIH film that is also in COVID-19 Radiography
(:mod:`crrg.data.duplicates`) is ``excluded`` (its copy is already used, under that source's
labels), and the NIH patient's other films take the copy's split, so no patient is in two parts
across the two sources (copies in different parts: the patient is excluded).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from crrg.data.records import Record

SPLITS: tuple[str, ...] = ("train", "val", "test")
EXCLUDED = "excluded"


@dataclass(frozen=True)
class SplitPolicy:
    namespace: str
    val: float
    test: float
    given: bool = False  # keep the split the source gives (fall back to hashing)


POLICIES: dict[str, SplitPolicy] = {
    "iu_xray": SplitPolicy("iu_xray", 0.0, 0.0, given=True),
    "mimic_cxr": SplitPolicy("mimic_cxr", 0.1, 0.1, given=True),
    "kermany_pneumonia": SplitPolicy("kermany_pneumonia", 0.15, 0.0),
    "covid_radiography": SplitPolicy("covid_radiography", 0.10, 0.15),
    "jsrt_scr": SplitPolicy("jsrt_scr", 0.1, 0.1),
    "covid_lung_boxes": SplitPolicy("covid-chestxray-dataset", 0.1, 0.1),
    "covid_anatomy": SplitPolicy("covid-chestxray-dataset", 0.1, 0.1),
    "nih_cxr14": SplitPolicy("nih_cxr14/8", 0.15, 0.15),
    "tbx11k": SplitPolicy("tbx11k", 0.15, 0.15),
}


def hash_fraction(namespace: str, key: str) -> float:
    """A stable number in [0, 1) for ``key`` within ``namespace``."""
    digest = hashlib.sha1(f"{namespace}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hash_split(namespace: str, patient: str, val: float, test: float) -> str:
    """``test`` for the lowest ``test`` fraction of patients, then ``val``, then ``train``."""
    if not (0 <= val and 0 <= test and val + test <= 1):
        raise ValueError(f"val ({val}) and test ({test}) must be fractions summing to <= 1")
    u = hash_fraction(namespace, patient)
    return "test" if u < test else "val" if u < test + val else "train"


def split_of(record: Record) -> str:
    """The split of one record under its source's policy (see the module table)."""
    if record.source not in POLICIES:
        raise ValueError(f"no split policy for source {record.source!r}; known: {sorted(POLICIES)}")
    policy = POLICIES[record.source]
    if record.source == "iu_xray":
        return record.split or "train"
    if policy.given and record.split in SPLITS:
        return record.split  # type: ignore[return-value]
    if record.source == "kermany_pneumonia":
        if record.split == "test":
            return "test"
        if record.extra.get("test_patient"):  # set by the reader from the whole test folder
            return EXCLUDED
    return hash_split(policy.namespace, record.patient, policy.val, policy.test)


def assign_splits(records: Iterable[Record]) -> dict[str, str]:
    """Split per record key."""
    return {r.key: split_of(r) for r in records}


def follow_same_films(records: Sequence[Record], splits: Mapping[str, str],
                      copies: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Splits with films shared between sources handled (see the module docstring).

    ``copies``: {record key: keys of the same film in other sources}
    (:func:`crrg.data.duplicates.same_films`). Only the records of patients with a shared film
    change."""
    out = dict(splits)
    parts: dict[tuple[str, str], set[str]] = defaultdict(set)
    for record in records:
        if record.key in copies:
            parts[(record.source, record.patient)].update(splits[k] for k in copies[record.key])
    for record in records:
        part = parts.get((record.source, record.patient))
        if part is None:
            continue
        out[record.key] = EXCLUDED if record.key in copies or len(part) != 1 else next(iter(part))
    return out
