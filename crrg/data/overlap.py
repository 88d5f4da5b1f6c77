"""The one rule that turns a finding's mask (or box) into region-level labels.

For a finding mask ``M`` (opacity, tube, or a nodule's box drawn as a mask) and a region box ``B``
(stored-image pixels), with ``inside = |M ∩ B|``:

- **positive** when ``inside >= MIN_BOX_COVER * |B|`` (the finding fills a noticeable part of the
  region: a large opacity) **or** ``inside >= MIN_MASK_SHARE * |M|`` (a noticeable part of the
  finding lies in the region: a small nodule, a thin tube);
- **negative** when ``inside == 0``;
- **unknown** otherwise (a sliver of overlap: neither label is safe, so training masks it).

A source that annotates a finding but has no mask of it on an image makes every region negative
for it on that image (the annotators drew every instance).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

MIN_BOX_COVER = 0.05
MIN_MASK_SHARE = 0.25

Box = Sequence[float]


def box_mask(box: Box, height: int, width: int) -> np.ndarray:
    """A filled xyxy box as a bool mask (continuous coordinates, clipped to the image)."""
    mask = np.zeros((height, width), dtype=bool)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    mask[max(0, y1):max(0, y2), max(0, x1):max(0, x2)] = True
    return mask


def region_overlap_labels(mask: np.ndarray, boxes: Mapping[str, Box],
                          regions: Iterable[str] | None = None) -> dict[str, int | None]:
    """{region: 1 | 0 | None (unknown)} for ``mask`` [H, W] bool over ``boxes`` (see module doc)."""
    total = int(mask.sum())
    out: dict[str, int | None] = {}
    for name in regions if regions is not None else boxes:
        if name not in boxes:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[name])
        area = max(1, (x2 - x1) * (y2 - y1))
        inside = int(mask[max(0, y1):max(0, y2), max(0, x1):max(0, x2)].sum())
        if inside == 0:
            out[name] = 0
        elif inside >= MIN_BOX_COVER * area or (total and inside >= MIN_MASK_SHARE * total):
            out[name] = 1
        else:
            out[name] = None
    return out
