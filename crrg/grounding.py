"""Write a report whose every sentence carries its evidence (the contract of :mod:`crrg.types`).

Sentences come from three kinds of evidence, never from text alone:

- ``region``: the region-level finding heads (:class:`crrg.findings.RegionFindings`: nodule,
  opacity, support device), one sentence per finding naming the detected regions whose calibrated
  probability passes the finding's threshold; and the decoder's sentences for selected regions,
  kept only as *normal* statements of regions that the abnormality head calls normal (a finding
  the decoder writes has no region-level evidence of its own, so it is not reported);
- ``measurement``: sentences built from values measured on the detected anatomy (the
  cardiothoracic ratio), passed in ready-made;
- ``image``: image-level findings (:class:`crrg.findings.ImageFindings`), written without any
  location.

Every sentence is then checked against :func:`crrg.locations.unsupported_locations`; one that names
a side, lobe or zone its evidence does not cover is dropped (``dropped`` keeps them, for tests and
the evaluation's count). A normal decoder sentence about the lungs is also dropped when the image
has a lung finding (it would contradict it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from crrg.findings import FINDING_REGIONS, POOL_REGIONS
from crrg.locations import named_locations, region_side, unsupported_locations
from crrg.measurements import Measured
from crrg.regions import REGION_INDEX, REGIONS
from crrg.report import assemble_report, normalize_sentence
from crrg.types import Evidence, Sentence

REGION_TEMPLATES: dict[str, str] = {
    "nodule": "There is a nodule in the {where}.",
    "opacity": "There is an opacity in the {where}.",
    "support device": "A tube or line projects over the {where}.",
}
IMAGE_TEMPLATES: dict[str, tuple[str, str]] = {  # finding -> (present, absent); no locations
    "pneumonia": ("The appearance is consistent with pneumonia; its location is not determined.",
                  "There is no radiographic evidence of pneumonia."),
}
LUNG_FINDINGS = ("nodule", "opacity")
#: findings reported in their single most probable region (JSRT images hold one nodule each)
SINGLE_REGION = ("nodule",)
#: a decoder sentence that names a device, hardware or surgery states a finding ("The tip is in
#: the right atrium.", "A humerus prosthesis.") even when the label extractor calls it normal
PRESENCE_WORDS = re.compile(
    r"\b(tubes?|lines?|catheters?|tips?|pacemakers?|pacers?|prosthes\w*|wires?|clips?|stents?|ports?"
    r"|devices?|hardware|leads?|picc|drains?|electrodes?|valves?|sternotomy|surgical|postsurgical"
    r"|arthroplast\w*|fixation|plates?|screws?|implants?|markers?)\b", re.IGNORECASE)
_IMAGE_ORDER = REGION_INDEX["left hemidiaphragm"] + 0.5  # image-level lung sentences follow the lungs


@dataclass(frozen=True)
class ImageEvidence:
    """What the heads said about one image (region axis = :data:`crrg.regions.REGIONS`)."""

    detected: Sequence[bool]
    abnormal: Sequence[float]  # [29] abnormality probability
    region_findings: Mapping[str, Sequence[float]] = field(default_factory=dict)  # finding -> [29]
    image_findings: Mapping[str, float] = field(default_factory=dict)  # finding -> probability
    generated: Mapping[str, str] = field(default_factory=dict)  # region -> decoder sentence
    measurements: Sequence[Sentence] = ()  # ready-made measurement sentences


@dataclass(frozen=True)
class Composed:
    sentences: tuple[Sentence, ...]
    dropped: tuple[tuple[str, str], ...]  # (text, why) of sentences that broke the contract

    @property
    def report(self) -> str:
        return " ".join(s.text for s in self.sentences)


def measurement_sentence(measured: Measured) -> Sentence:
    """A measured finding (:class:`crrg.measurements.Measured`, e.g. the heart size from the CTR)
    as a sentence with ``measurement`` evidence for the regions it was measured on."""
    return Sentence(measured.text, measured.regions, measured.finding,
                    Evidence("measurement", value=float(measured.value), measurement=measured.name))


def join_regions(names: Sequence[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def where(names: Sequence[str]) -> str:
    """Region names as a phrase, lung zones grouped by side: "right upper and mid lung zones and
    the left lower lung zone"."""
    zones: dict[str, list[str]] = {}
    other = []
    for name in names:
        parts = name.split()
        if len(parts) == 4 and parts[2:] == ["lung", "zone"]:
            zones.setdefault(parts[0], []).append(parts[1])
        else:
            other.append(name)
    phrases = [f"{side} {join_regions(kinds)} lung zone{'s' if len(kinds) > 1 else ''}"
               for side, kinds in zones.items()]
    return join_regions([*phrases, *other]).replace(" and right ", " and the right ").replace(
        " and left ", " and the left ")


def _region_sentences(ev: ImageEvidence, thresholds: Mapping[str, float]) -> list[Sentence]:
    out = []
    for finding, probs in ev.region_findings.items():
        threshold = thresholds.get(finding, 0.5)
        hits = [REGION_INDEX[r] for r in FINDING_REGIONS[finding]
                if ev.detected[REGION_INDEX[r]] and probs[REGION_INDEX[r]] >= threshold]
        if not hits:
            continue
        if finding in SINGLE_REGION:
            hits = [max(hits, key=lambda i: probs[i])]
        names = tuple(REGIONS[i] for i in sorted(hits))
        text = REGION_TEMPLATES[finding].format(where=where(names))
        out.append(Sentence(text, names, finding,
                            Evidence("region", probability=max(float(probs[i]) for i in hits))))
    return out


def _image_sentences(ev: ImageEvidence, thresholds: Mapping[str, float]) -> list[Sentence]:
    out = []
    for finding, prob in ev.image_findings.items():
        present, absent = IMAGE_TEMPLATES[finding]
        if prob >= thresholds.get(finding, 0.5):
            out.append(Sentence(present, (), finding, Evidence("image", probability=float(prob))))
        else:
            out.append(Sentence(absent, (), None, Evidence("image", probability=1.0 - float(prob))))
    return out


def _decoder_sentences(ev: ImageEvidence, abnormal_threshold: float, lung_finding: set[str],
                       skip_regions: set[str], dropped: list[tuple[str, str]],
                       decoder_findings: bool = False) -> list[Sentence]:
    """Normal statements the decoder wrote for selected, normal-looking regions (and, with
    ``decoder_findings``, its finding sentences for regions the abnormality head flags)."""
    from crrg.data.sentences import analyse_sentence

    written = [(r, t) for r, t in ev.generated.items() if r not in skip_regions and t]
    _, kept = assemble_report(written)
    out = []
    for item in kept:
        regions = tuple(sorted(item.regions, key=REGION_INDEX.__getitem__))
        probs = [float(ev.abnormal[REGION_INDEX[r]]) for r in regions]
        info = analyse_sentence(item.text)
        if not info.abnormal and PRESENCE_WORDS.search(item.text) and not info.negated:
            dropped.append((item.text, "names a device or hardware without region-level evidence"))
            continue
        if info.abnormal:
            if decoder_findings and max(probs) > abnormal_threshold:
                finding = info.findings[0] if info.findings else "abnormality"
                out.append(Sentence(item.text, regions, finding, Evidence("region", probability=max(probs))))
            else:
                dropped.append((item.text, "states a finding without region-level evidence"))
            continue
        if max(probs) > abnormal_threshold:
            dropped.append((item.text, "normal statement for a region the abnormality head calls abnormal"))
            continue
        if lung_finding and any(r in POOL_REGIONS for r in regions):
            sides = named_locations(item.text).sides or {"right", "left"}
            if sides & lung_finding:
                dropped.append((item.text, "normal lung statement contradicts a lung finding"))
                continue
        out.append(Sentence(item.text, regions, None, Evidence("region", probability=1.0 - max(probs))))
    return out


def _order(sentence: Sentence) -> float:
    if sentence.evidence.kind == "image" or not sentence.regions:
        return _IMAGE_ORDER
    return float(REGION_INDEX[sentence.regions[0]])


def compose(ev: ImageEvidence, region_thresholds: Mapping[str, float] | None = None,
            image_thresholds: Mapping[str, float] | None = None, abnormal_threshold: float = 0.5,
            decoder_findings: bool = False) -> Composed:
    """The report's sentences with evidence, report order (see the module doc)."""
    dropped: list[tuple[str, str]] = []
    found = _region_sentences(ev, region_thresholds or {})
    images = _image_sentences(ev, image_thresholds or {})
    lung_finding: set[str] = set()
    for s in found:
        if s.finding in LUNG_FINDINGS:
            lung_finding |= {region_side(r) for r in s.regions} - {None}
    if any(s.finding is not None for s in images):
        lung_finding |= {"right", "left"}
    measured_regions = {r for s in ev.measurements for r in s.regions[:1]}  # e.g. the heart
    normal = _decoder_sentences(ev, abnormal_threshold, lung_finding, measured_regions, dropped,
                                decoder_findings)
    sentences = []
    for s in [*found, *images, *ev.measurements, *normal]:
        text = normalize_sentence(s.text)
        bad = unsupported_locations(text, s.regions, s.evidence.kind)
        if bad:
            dropped.append((text, f"names {sorted(bad.sides | bad.zones)} without evidence there"))
            continue
        sentences.append(Sentence(text, s.regions, s.finding, s.evidence))
    sentences.sort(key=_order)  # stable: kinds keep their order within a region
    return Composed(tuple(sentences), tuple(dropped))
