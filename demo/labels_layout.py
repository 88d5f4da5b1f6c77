"""Where to put the name tags of region boxes so that no two tags overlap (pure geometry, no drawing).

The 29 regions share many edges and corners (right/left lung, stacked upper/mid/lower zones), so a
tag at every box's top-left corner collides. :func:`place_labels` tries, per box in the given order,
spots that touch the box (above its top-left corner, inside its top-left then bottom-left corner, at
its other corners, beside it, then shifted down its left or right edge in steps) and takes the first
that is inside the image and clear of the tags already placed; when none is free it takes the
nearest free spot anywhere and returns a leader line from the tag to the box. Rectangles are
``(x1, y1, x2, y2)`` in display pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

Rect = tuple[float, float, float, float]
Point = tuple[float, float]


@dataclass(frozen=True)
class Placement:
    """A tag's rectangle and, when it does not touch its box, a leader line ``(tag point, box point)``."""

    rect: Rect
    leader: tuple[Point, Point] | None = None


def rects_overlap(a: Rect, b: Rect, gap: float = 0.0) -> bool:
    """True when ``a`` and ``b`` come closer than ``gap`` (``gap=0``: their interiors intersect)."""
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def rect_distance(a: Rect, b: Rect) -> float:
    """Euclidean distance between two rectangles (0 when they touch or overlap)."""
    dx = max(0.0, a[0] - b[2], b[0] - a[2])
    dy = max(0.0, a[1] - b[3], b[1] - a[3])
    return math.hypot(dx, dy)


def inside(rect: Rect, width: float, height: float) -> bool:
    return rect[0] >= 0 and rect[1] >= 0 and rect[2] <= width and rect[3] <= height


def nearest_point(rect: Rect, point: Point) -> Point:
    """The point of ``rect`` (border or inside) closest to ``point``."""
    return min(max(point[0], rect[0]), rect[2]), min(max(point[1], rect[1]), rect[3])


def _clamp(x: float, y: float, w: float, h: float, width: float, height: float) -> Rect:
    x = min(max(0.0, x), width - w)
    y = min(max(0.0, y), height - h)
    return x, y, x + w, y + h


def _touching_spots(box: Rect, w: float, h: float, gap: float) -> Iterator[tuple[float, float]]:
    """Top-left corners of tag spots that touch ``box``, best first."""
    x1, y1, x2, y2 = box
    yield x1, y1 - h  # above the top-left corner (the classic spot)
    yield x1, y1  # inside, top-left
    yield x1, y2 - h  # inside, bottom-left
    yield x2 - w, y1 - h  # above the top-right corner
    yield x2 - w, y1  # inside, top-right
    yield x1 - w, y1  # left of the box, at its top
    yield x2, y1  # right of the box, at its top
    yield x1, y2  # below the bottom-left corner
    yield x2 - w, y2  # below the bottom-right corner
    yield x2 - w, y2 - h  # inside, bottom-right
    step = h + gap
    rows = max(0, int((y2 - y1 - h) // step))
    for k in range(1, rows + 1):  # stacked down the box's left, then right, edge (inside and outside)
        y = y1 + k * step
        yield x1, y
        yield x2 - w, y
        yield x1 - w, y
        yield x2, y


def _touches(rect: Rect, box: Rect, tolerance: float) -> bool:
    return rect_distance(rect, box) <= tolerance


def place_labels(boxes: Sequence[Rect], sizes: Sequence[tuple[float, float]], image_size: tuple[float, float],
                 gap: float = 2.0, blocked: Sequence[Rect] = ()) -> list[Placement | None]:
    """One tag rectangle per box (``sizes[i]`` = tag width, height), placed in the given order.

    Every returned rectangle lies inside the image (``image_size`` = width, height), is at least
    ``gap`` away from every other returned rectangle and from ``blocked``, and either touches its
    box or comes with a leader line from the tag to the box. ``None`` for a tag that fits nowhere
    (larger than the image, or no free spot left).
    """
    width, height = image_size
    placed: list[Rect] = list(blocked)
    out: list[Placement | None] = []
    for box, (w, h) in zip(boxes, sizes, strict=True):
        if w > width or h > height:
            out.append(None)
            continue
        placement = _touching_spot(box, w, h, width, height, gap, placed)
        if placement is None:
            placement = _free_spot(box, w, h, width, height, gap, placed)
        if placement is not None:
            placed.append(placement.rect)
        out.append(placement)
    return out


def _touching_spot(box: Rect, w: float, h: float, width: float, height: float, gap: float,
                   placed: Sequence[Rect]) -> Placement | None:
    for x, y in _touching_spots(box, w, h, gap):
        rect = _clamp(x, y, w, h, width, height)
        if _touches(rect, box, 0.5) and not any(rects_overlap(rect, other, gap) for other in placed):
            return Placement(rect)
    return None


def _free_spot(box: Rect, w: float, h: float, width: float, height: float, gap: float,
               placed: Sequence[Rect]) -> Placement | None:
    """The free spot nearest the box's top-left corner on a grid over the image, with a leader line."""
    step_x, step_y = max(2.0, w / 4), max(2.0, (h + gap) / 2)
    xs = np.append(np.arange(0.0, width - w, step_x), width - w)
    ys = np.append(np.arange(0.0, height - h, step_y), height - h)
    gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
    cand = np.stack([gx, gy, gx + w, gy + h], axis=1)
    if placed:
        others = np.asarray(placed, dtype=float)
        clash = ((cand[:, None, 0] < others[None, :, 2] + gap) & (others[None, :, 0] < cand[:, None, 2] + gap)
                 & (cand[:, None, 1] < others[None, :, 3] + gap) & (others[None, :, 1] < cand[:, None, 3] + gap))
        cand = cand[~clash.any(axis=1)]
    if len(cand) == 0:
        return None
    bx1, by1, bx2, by2 = box
    dx = np.maximum.reduce([np.zeros(len(cand)), bx1 - cand[:, 2], cand[:, 0] - bx2])
    dy = np.maximum.reduce([np.zeros(len(cand)), by1 - cand[:, 3], cand[:, 1] - by2])
    corner = np.hypot(cand[:, 0] - bx1, cand[:, 3] - by1)  # tie-break: close to the top-left corner
    best = cand[int(np.lexsort((corner, np.hypot(dx, dy)))[0])]
    rect = (float(best[0]), float(best[1]), float(best[2]), float(best[3]))
    if _touches(rect, box, 0.5):
        return Placement(rect)
    centre = ((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2)
    on_box = nearest_point(box, centre)
    return Placement(rect, (nearest_point(rect, on_box), on_box))
