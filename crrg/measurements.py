"""Findings measured on the detected anatomy (torch-free).

Cardiothoracic ratio (CTR): the width of the cardiac silhouette box divided by the width of the
union of the right and left lung boxes (the thoracic width), both horizontal extents in pixels.
On a PA view a CTR above :data:`CTR_ENLARGED` (0.5) is read as an enlarged heart; an AP view
magnifies the heart, so there (and when the view is unknown) an enlarged value is not called
cardiomegaly and the sentence says so once, briefly.

Validated by ``train.validate_measurements`` against the same ratio from the JSRT/SCR heart and lung
masks and the COVID-19-anatomy cardiomediastinum and lung masks (figures in the model card). No
other measurement is reported: tracheal deviation and upper-mediastinal width were scored against
the COVID-19-anatomy masks and not validated (too few held-out images with airway masks, no
independent mediastinal reference; see that module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CTR_ENLARGED = 0.5
HEART, RIGHT_LUNG, LEFT_LUNG = "cardiac silhouette", "right lung", "left lung"
CTR_REGIONS: tuple[str, ...] = (HEART, RIGHT_LUNG, LEFT_LUNG)  # the regions the CTR is measured on

Box = Sequence[float]


@dataclass(frozen=True)
class Measured:
    """A measured finding: the sentence, the finding it states (``None``: none stated), the value
    and the regions it was measured on (the sentence's ``measurement`` evidence)."""

    name: str
    value: float
    text: str
    finding: str | None
    regions: tuple[str, ...] = CTR_REGIONS


@dataclass(frozen=True)
class Segment:
    """A horizontal segment ``x1..x2`` at height ``y`` (pixels), for the demo's overlay."""

    x1: float
    x2: float
    y: float


def _box(boxes: Mapping[str, Box | None], name: str) -> Box | None:
    box = boxes.get(name)
    if box is None or len(box) != 4 or not box[2] > box[0] or not box[3] > box[1]:
        return None
    return box


def cardiothoracic_ratio(boxes: Mapping[str, Box | None]) -> float | None:
    """CTR from xyxy boxes {region name: box}; ``None`` when a box is missing or degenerate."""
    heart, right, left = (_box(boxes, n) for n in (HEART, RIGHT_LUNG, LEFT_LUNG))
    if heart is None or right is None or left is None:
        return None
    thorax = max(right[2], left[2]) - min(right[0], left[0])
    return float((heart[2] - heart[0]) / thorax) if thorax > 0 else None


def ctr_widths(boxes: Mapping[str, Box | None]) -> tuple[Segment, Segment] | None:
    """(cardiac width, thoracic width) as segments: the heart's at its box's vertical centre, the
    thorax's at the lower third of the lungs (about where the thoracic width is widest)."""
    heart, right, left = (_box(boxes, n) for n in (HEART, RIGHT_LUNG, LEFT_LUNG))
    if heart is None or right is None or left is None:
        return None
    top, bottom = min(right[1], left[1]), max(right[3], left[3])
    return (Segment(float(heart[0]), float(heart[2]), float((heart[1] + heart[3]) / 2)),
            Segment(float(min(right[0], left[0])), float(max(right[2], left[2])),
                    float(top + (bottom - top) * 2 / 3)))


def normalise_view(view: str | None) -> str | None:
    """The view as "PA" or "AP" from a label ("PA", "ap supine", "AP erect", ...); else ``None``."""
    head = (view or "").strip().upper()[:2]
    return head if head in ("PA", "AP") else None


def heart_size(ratio: float, view: str | None = None) -> Measured:
    """The heart-size sentence from the CTR and the view ("PA", "AP", or ``None``: unknown), one
    short sentence: "Heart size is within normal limits (cardiothoracic ratio 0.45; view
    unknown)." The call is made on the value as written (two decimals), so the text never says
    "enlarged (cardiothoracic ratio 0.50)". An enlarged ratio on an AP or unknown view is not
    called cardiomegaly (an AP view magnifies the heart); the sentence says so once, briefly."""
    view = normalise_view(view)
    value = f"cardiothoracic ratio {ratio:.2f}"
    enlarged = round(ratio, 2) > CTR_ENLARGED
    if view == "PA":
        if enlarged:
            return Measured("cardiothoracic_ratio", ratio, f"The heart is enlarged ({value}).", "cardiomegaly")
        return Measured("cardiothoracic_ratio", ratio, f"Heart size is within normal limits ({value}).", None)
    where = "AP view" if view == "AP" else "view unknown"
    if enlarged:  # not called cardiomegaly: the magnification may explain it
        return Measured("cardiothoracic_ratio", ratio,
                        f"The cardiothoracic ratio is {ratio:.2f} ({where}; an AP view magnifies the heart).", None)
    return Measured("cardiothoracic_ratio", ratio, f"Heart size is within normal limits ({value}; {where}).", None)