"""The one record type every dataset reader yields.

A :class:`Record` is one image (or, for report-only sources such as IU X-ray without its images,
one study with ``image=None``). Conventions:

- ``boxes`` are xyxy floats in pixels of the stored image, continuous coordinates: a mask whose
  pixels span columns ``a..b`` has ``x1 = a`` and ``x2 = b + 1``; a COCO ``[x, y, w, h]`` box is
  ``[x, y, x + w, y + h]``.
- ``annotated`` lists the regions this image has a box for. A region that is not listed is
  *unknown*, never *absent*: training must not treat it as background. In every source read here
  a region that is annotated has a box (anatomy is always present on a frontal radiograph; a missing
  box is a gap in the annotation, not an absence).
- ``derived`` is the subset of ``annotated`` whose boxes come from the geometric rules of
  :mod:`crrg.data.silver` rather than from an expert mask or box.
- ``labels`` maps names from :data:`crrg.labels.LABELS` (the reported FINDINGS plus the findings
  a source labels that the model does not report yet) to 1 (present), 0 (absent) or -1
  (uncertain); a finding that is not a key is unknown.
- ``region_abnormal`` maps region names to True/False where the source localises findings
  (Chest ImaGenome attributes; COVID anatomy opacity masks); other regions are unknown.
- ``finding_boxes``: expert boxes of a region-level finding in stored-image pixels (TBX11K TB
  areas), for sources without region boxes: they become region labels through
  :mod:`crrg.data.overlap` once region boxes exist for the image (see the source's reader).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crrg.labels import LABELS
from crrg.regions import REGIONS

Box = tuple[float, float, float, float]

SOURCES: tuple[str, ...] = (
    "jsrt_scr",
    "covid_lung_boxes",
    "covid_anatomy",
    "kermany_pneumonia",
    "covid_radiography",
    "iu_xray",
    "mimic_cxr",
    "nih_cxr14",
    "tbx11k",
)
TEXT_KINDS: tuple[str, ...] = ("report", "clinical_notes")


@dataclass
class SourceSentence:
    """A report sentence with the regions it describes, when the source says so (ImaGenome)."""

    text: str
    regions: tuple[str, ...] = ()
    abnormal: bool | None = None
    findings: tuple[str, ...] = ()


@dataclass(frozen=True)
class FindingBox:
    """An expert box of a region-level finding (``finding``, e.g. "opacity") on one image;
    ``kind`` keeps the source's own class (e.g. "ActiveTuberculosis")."""

    finding: str
    box: Box
    kind: str = ""


@dataclass
class Record:
    source: str
    patient: str
    image: Path | None = None
    width: int | None = None
    height: int | None = None
    boxes: dict[str, Box] = field(default_factory=dict)
    annotated: tuple[str, ...] = ()
    derived: tuple[str, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)
    region_abnormal: dict[str, bool] = field(default_factory=dict)
    finding_boxes: tuple[FindingBox, ...] = ()
    text: str | None = None
    text_kind: str | None = None
    sentences: list[SourceSentence] | None = None  # region-grounded sentences given by the source
    study: str | None = None
    split: str | None = None  # the split the source itself gives, if any
    licence: str = ""
    view: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Unique id within the source: the image path, else the study id."""
        return str(self.image) if self.image is not None else f"{self.source}:{self.study}"

    def validate(self) -> Record:
        """Check names, box geometry and flag consistency; raises ``ValueError``; returns self."""
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; valid sources: {', '.join(SOURCES)}")
        if self.text_kind is not None and self.text_kind not in TEXT_KINDS:
            raise ValueError(f"unknown text_kind {self.text_kind!r}; valid: {TEXT_KINDS}")
        for name in list(self.boxes) + list(self.annotated) + list(self.region_abnormal):
            if name not in REGIONS:
                raise ValueError(f"unknown region {name!r} in {self.key}; valid: {', '.join(REGIONS)}")
        for name in self.labels:
            if name not in LABELS:
                raise ValueError(f"unknown finding {name!r} in {self.key}; valid: {', '.join(LABELS)}")
        if set(self.annotated) != set(self.boxes):
            raise ValueError(f"{self.key}: annotated {sorted(self.annotated)} != boxes {sorted(self.boxes)}")
        if not set(self.derived) <= set(self.annotated):
            raise ValueError(f"{self.key}: derived regions must be annotated")
        if (self.boxes or self.finding_boxes) and (self.width is None or self.height is None):
            raise ValueError(f"{self.key}: boxes need the image width and height")
        named = list(self.boxes.items()) + [(f"{f.finding} ({f.kind})", f.box) for f in self.finding_boxes]
        for name, (x1, y1, x2, y2) in named:
            if not (0 <= x1 < x2 <= self.width and 0 <= y1 < y2 <= self.height):  # type: ignore[operator]
                raise ValueError(
                    f"{self.key}: box {name} {[x1, y1, x2, y2]} outside {self.width}x{self.height}"
                )
        return self


def ordered_regions(names: set[str] | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Region names in :data:`crrg.regions.REGIONS` order."""
    chosen = set(names)
    return tuple(r for r in REGIONS if r in chosen)


def clip_box(box: tuple[float, float, float, float], width: int, height: int,
             min_size: float = 1.0) -> Box | None:
    """Clip an xyxy box to the image; ``None`` when less than ``min_size`` pixels remain."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = max(0.0, min(x1, width)), max(0.0, min(x2, width))
    y1, y2 = max(0.0, min(y1, height)), max(0.0, min(y2, height))
    if x2 - x1 < min_size or y2 - y1 < min_size:
        return None
    return (round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2))
