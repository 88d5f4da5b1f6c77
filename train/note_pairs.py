"""Image -> own-text pairs from the COVID sets' clinical notes (issue #10 §4).

``covid_lung_boxes`` and ``covid_anatomy`` give each image the free-text ``clinical_notes`` of
its case (a case description, not a radiology report). Some of its sentences describe the
radiograph ("an infiltrate in the upper lobe of the left lung"). A :class:`NotePair` is one
image with those sentences, in note order; its ``reference`` (the sentences joined) is the
reference text the NLG metrics score a generated report against.

Which sentences count is decided by :func:`train.targets.note_sentences` (its rules, not a
copy of them: names a region, an imaging word of :data:`train.targets.IMAGING_WORDS`, no CT
(:data:`~train.targets.NOT_RADIOGRAPH`), no case history (:data:`~train.targets.CASE_HISTORY`),
at most :data:`~train.targets.NOTE_MAX_WORDS` words), applied to one image's note at a time.
An image whose note keeps no sentence gives no pair.

A case's notes cover all its radiographs (often taken days apart), so two images of one patient
share the reference; the split is the project's patient-disjoint one
(:func:`crrg.data.splits.split_of`, the ``split`` field of ``images.jsonl``), and
:func:`assert_patient_disjoint` checks that no patient has pairs in two splits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crrg.data.readers import read_source
from crrg.data.records import Record
from crrg.data.splits import POLICIES, SPLITS, split_of
from train.targets import note_sentences

NOTE_SOURCES: tuple[str, ...] = ("covid_lung_boxes", "covid_anatomy")
NOTE_KIND = "clinical_notes"
REFERENCE = ("the radiograph sentences of the image's own clinical note (covid_lung_boxes, "
             "covid_anatomy: case descriptions, not radiology reports), joined in note order; "
             "chosen by train.targets.note_sentences' rules; a case's note covers all its images")


@dataclass(frozen=True)
class NotePair:
    """One image and the radiograph sentences of its own note."""

    image: str  # as the records give it (images.jsonl: relative to the data root)
    patient: str
    split: str
    source: str
    sentences: tuple[str, ...]

    @property
    def reference(self) -> str:
        """The reference text: the sentences joined in note order."""
        return " ".join(self.sentences)

    @property
    def patient_key(self) -> tuple[str, str]:
        """(split namespace, patient): the COVID sets share one namespace, so a patient present
        in both is one patient."""
        policy = POLICIES.get(self.source)
        return (policy.namespace if policy else self.source, self.patient)

    def as_dict(self) -> dict[str, Any]:
        return {"image": self.image, "patient": self.patient, "split": self.split,
                "source": self.source, "sentences": list(self.sentences), "reference": self.reference}


class SplitLeakError(ValueError):
    """Pairs of one patient were found in two splits."""


def record_dict(record: Record | dict[str, Any], data_root: Path | None = None) -> dict[str, Any]:
    """The keys :func:`note_pairs` reads (``image``, ``patient``, ``split``, ``source``, ``text``,
    ``text_kind``) from a reader :class:`Record` (split by :func:`split_of`, image relative to
    ``data_root`` when given and inside it) or a dict (returned as is)."""
    if isinstance(record, dict):
        return record
    image = record.image
    if image is not None and data_root is not None:
        from train.preparation import image_ref

        image = image_ref(image, data_root.resolve())
    return {"image": None if image is None else str(image), "patient": record.patient,
            "split": split_of(record), "source": record.source, "text": record.text,
            "text_kind": record.text_kind}


def read_note_records(data: Path, sources: Iterable[str] = NOTE_SOURCES,
                      limit: int | None = None) -> list[dict[str, Any]]:
    """Records of the note sources under ``data`` (the shared data folder) as dicts, image paths
    relative to ``data``; a source folder that is missing is skipped."""
    out: list[dict[str, Any]] = []
    for source in sources:
        if (data / source).is_dir():
            out += [record_dict(r, data) for r in read_source(source, data / source, limit=limit)]
    return out


def note_pairs(records: Iterable[Record | dict[str, Any]], data_root: Path | None = None
               ) -> list[NotePair]:
    """A :class:`NotePair` for every image whose clinical note has at least one radiograph
    sentence, sorted by (split, source, image) so the result never depends on reading order.
    ``records``: reader :class:`Record` s or dicts with ``image``, ``patient``, ``split``,
    ``source``, ``text``, ``text_kind`` (``images.jsonl`` lines). An image listed twice counts
    once; a record with a note but no split raises ``ValueError``."""
    pairs: dict[tuple[str, str], NotePair] = {}
    for item in records:
        record = record_dict(item, data_root)
        if record.get("text_kind") != NOTE_KIND or not record.get("text") or not record.get("image"):
            continue
        key = (str(record.get("source")), str(record["image"]))
        if key in pairs:
            continue
        if record.get("split") is None:
            raise ValueError(f"{record['image']}: a note record needs its split (see crrg.data.splits)")
        sentences = tuple(line["text"] for line in note_sentences([record]))
        if sentences:
            pairs[key] = NotePair(image=key[1], patient=str(record.get("patient") or key[1]),
                                  split=str(record["split"]), source=key[0], sentences=sentences)
    return sorted(pairs.values(), key=lambda p: (p.split, p.source, p.image))


def split_pairs(pairs: Iterable[NotePair], split: str) -> list[NotePair]:
    return [p for p in pairs if p.split == split]


def leaking_patients(pairs: Iterable[NotePair]) -> dict[tuple[str, str], list[str]]:
    """Patients with pairs in more than one split: {patient key: [splits]} (empty: disjoint)."""
    splits: dict[tuple[str, str], set[str]] = defaultdict(set)
    for pair in pairs:
        splits[pair.patient_key].add(pair.split)
    order = {s: i for i, s in enumerate(SPLITS)}
    return {k: sorted(v, key=lambda s: order.get(s, len(order))) for k, v in sorted(splits.items())
            if len(v) > 1}


def assert_patient_disjoint(pairs: Iterable[NotePair]) -> None:
    """Raise :class:`SplitLeakError` when a patient has pairs in two splits (train vs test
    included: a test reference must never have been seen in training)."""
    leaks = leaking_patients(pairs)
    if leaks:
        shown = ", ".join(f"{patient} ({'/'.join(s)})" for (_, patient), s in list(leaks.items())[:5])
        raise SplitLeakError(f"{len(leaks)} patient(s) have note pairs in more than one split: {shown}")


def pair_counts(pairs: Iterable[NotePair]) -> dict[str, dict[str, int]]:
    """{split: {source: pairs}}."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for pair in pairs:
        counts[pair.split][pair.source] += 1
    return {s: dict(sorted(c.items())) for s, c in sorted(counts.items())}
