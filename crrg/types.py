"""Frozen result types of the pipeline. Boxes are xyxy in ORIGINAL image pixels; probabilities 0-1."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from crrg import DISCLAIMER


@dataclass(frozen=True)
class RegionResult:
    """One of the 29 anatomical regions of one image.

    ``box`` is ``None`` when the detector did not find the region (it is then never selected and
    gets no sentence). ``selection_prob`` / ``abnormal_prob`` are ``None`` for undetected regions.
    """

    name: str
    box: tuple[float, float, float, float] | None
    score: float
    selection_prob: float | None
    abnormal_prob: float | None
    selected: bool
    abnormal: bool
    sentence: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "box": None if self.box is None else [round(v, 1) for v in self.box],
            "score": round(self.score, 4),
            "selected": self.selected,
            "abnormal": self.abnormal,
            "selection_prob": None if self.selection_prob is None else round(self.selection_prob, 4),
            "abnormal_prob": None if self.abnormal_prob is None else round(self.abnormal_prob, 4),
            "sentence": self.sentence,
        }


@dataclass(frozen=True)
class BoxSentence:
    """A sentence written for a user-drawn box (RGRG's interactive mode)."""

    box: tuple[float, float, float, float]
    sentence: str
    abnormal_prob: float


@dataclass(frozen=True)
class ReportResult:
    """Everything the pipeline says about one image."""

    image: str
    width: int
    height: int
    regions: tuple[RegionResult, ...]
    report: str
    labels: dict[str, float]
    label_regions: dict[str, str | None]
    box_sentence: BoxSentence | None = None
    timings: dict[str, float] = field(default_factory=dict)
    disclaimer: str = DISCLAIMER

    def region(self, name: str) -> RegionResult:
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(f"no region {name!r}")

    @property
    def sentences(self) -> list[tuple[str, str]]:
        """(region, sentence) of the regions that got a sentence, anatomical order."""
        return [(r.name, r.sentence) for r in self.regions if r.sentence]

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` schema (also the demo's download and API output)."""
        out: dict[str, Any] = {
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "regions": [r.to_json() for r in self.regions],
            "report": self.report,
            "labels": {k: round(v, 4) for k, v in self.labels.items()},
            "label_regions": self.label_regions,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "disclaimer": self.disclaimer,
        }
        if self.box_sentence is not None:
            b = self.box_sentence
            out["box"] = {"box": [round(v, 1) for v in b.box], "sentence": b.sentence,
                          "abnormal_prob": round(b.abnormal_prob, 4)}
        return out

    def to_json_line(self) -> str:
        return json.dumps(self.to_json())
