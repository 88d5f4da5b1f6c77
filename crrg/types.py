"""Frozen result types of the pipeline. Boxes are xyxy in ORIGINAL image pixels; probabilities 0-1."""

from __future__ import annotations

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
    #: calibrated region-level finding probabilities (models with finding heads; empty when the
    #: region was not detected)
    findings: dict[str, float] = field(default_factory=dict)

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
            "findings": {k: round(v, 4) for k, v in self.findings.items()},
        }


EVIDENCE_KINDS: tuple[str, ...] = ("region", "measurement", "image")


@dataclass(frozen=True)
class Evidence:
    """What one report sentence rests on.

    ``kind``: ``"region"`` (a region-level classifier trained on region-level labels, for the
    sentence's ``regions``), ``"measurement"`` (a value computed from detected anatomy, in
    ``value``) or ``"image"`` (an image-level classifier: the sentence names no location).
    ``probability``: the calibrated probability of the finding (or of "normal" for a normal
    statement) when a classifier gave it; ``value``: the measured value and ``measurement`` its
    name (a key of :attr:`ReportResult.measurements`, e.g. ``"cardiothoracic_ratio"``).
    """

    kind: str
    probability: float | None = None
    value: float | None = None
    measurement: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVIDENCE_KINDS:
            raise ValueError(f"evidence kind must be one of {EVIDENCE_KINDS}, got {self.kind!r}")
        if (self.kind == "measurement") != (self.measurement is not None):
            raise ValueError("a measurement's evidence names its measurement, other evidence none: "
                             f"kind {self.kind!r}, measurement {self.measurement!r}")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind,
                "probability": None if self.probability is None else round(self.probability, 4),
                "value": None if self.value is None else round(self.value, 4),
                "measurement": self.measurement}


@dataclass(frozen=True)
class Sentence:
    """One sentence of a report with its evidence (report order).

    ``regions``: the regions the evidence is for (the boxes the demo draws); ``finding``: the
    finding it states (``None`` for a normal statement)."""

    text: str
    regions: tuple[str, ...]
    finding: str | None
    evidence: Evidence

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "regions": list(self.regions), "finding": self.finding,
                "evidence": self.evidence.to_json()}


@dataclass(frozen=True)
class InputCheck:
    """Does the input look like a frontal chest radiograph? ``score``: the checker's
    probability that it is one (0-1); ``reason``: why not, for the user (``None`` when ok);
    ``warning``: an accepted input the checker is unsure about (``ok`` stays True: it is
    reported, with this note), ``None`` otherwise."""

    ok: bool
    score: float
    reason: str | None = None
    warning: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "score": round(self.score, 4), "reason": self.reason}
        if self.warning is not None:
            out["warning"] = self.warning
        return out


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
    #: the report's findings sentences with their evidence, anatomical report order (``report`` is
    #: their text joined, then the line "Impression: ..." of :attr:`impression`)
    sentences: tuple[Sentence, ...] = ()
    #: values measured from the detected anatomy (``None`` where the anatomy was not found)
    measurements: dict[str, float | None] = field(default_factory=dict)
    input_check: InputCheck | None = None
    #: calibrated image-level finding probabilities (models with an image-level head)
    image_findings: dict[str, float] = field(default_factory=dict)
    #: one line: the positive findings in order of importance, each once, with its location, or
    #: "No acute cardiopulmonary abnormality." (:func:`crrg.grounding.impression`); ``report`` ends
    #: with it as a line "Impression: ..." ("" when the report has no sentence)
    impression: str = ""
    #: the report topics no evidence in this image speaks to (lungs, pleural effusion,
    #: pneumothorax, heart, mediastinum, hila, bones, devices, upper abdomen, diaphragm: those of
    #: :data:`crrg.report.TOPICS`); the report states nothing about them, normal or not, and
    #: ``report`` ends with the line "Not assessed by this model: ..."
    not_assessed: tuple[str, ...] = ()
    #: image-level findings the report neither states nor rules out (probability between the
    #: finding's rule-out probability and its threshold); ``report`` names them on the line
    #: "Indeterminate (neither stated nor ruled out): ..."
    indeterminate: tuple[str, ...] = ()

    def region(self, name: str) -> RegionResult:
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(f"no region {name!r}")

    @property
    def findings(self) -> dict[str, float]:
        """The calibrated probability of every finding the model knows, plain lower-case names:
        a region-level finding's maximum over the detected regions, an image-level finding's own
        probability (the larger where a name is both, e.g. "nodule"). Sorted by name."""
        out: dict[str, float] = {}
        for region in self.regions:
            for name, p in region.findings.items():
                out[name] = max(out.get(name, 0.0), float(p))
        for name, p in self.image_findings.items():
            out[name] = max(out.get(name, 0.0), float(p))
        return dict(sorted(out.items()))

    @property
    def findings_text(self) -> str:
        """The findings sentences joined (``report`` without its impression line): what the
        evaluation scores against reference findings sections and labels."""
        return " ".join(s.text for s in self.sentences)

    @property
    def region_sentences(self) -> list[tuple[str, str]]:
        """(region, generated sentence) of the regions the decoder wrote for, anatomical order."""
        return [(r.name, r.sentence) for r in self.regions if r.sentence]

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` schema (also the demo's download and API output)."""
        out: dict[str, Any] = {
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "regions": [r.to_json() for r in self.regions],
            "report": self.report,
            "impression": self.impression,
            "not_assessed": list(self.not_assessed),
            "indeterminate": list(self.indeterminate),
            "sentences": [s.to_json() for s in self.sentences],
            "measurements": {k: None if v is None else round(v, 4) for k, v in self.measurements.items()},
            "input_check": None if self.input_check is None else self.input_check.to_json(),
            "image_findings": {k: round(v, 4) for k, v in self.image_findings.items()},
            "findings": {k: round(v, 4) for k, v in self.findings.items()},
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
