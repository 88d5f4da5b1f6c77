"""Hand-made evidence for the report composer's tests (crrg.grounding)."""

from __future__ import annotations

from crrg.grounding import ImageEvidence
from crrg.regions import NUM_REGIONS, REGION_INDEX


def evidence(**changes) -> ImageEvidence:
    """Every region detected and normal-looking (abnormality 0.1), with ``changes``."""
    base = dict(detected=[True] * NUM_REGIONS, abnormal=[0.1] * NUM_REGIONS)
    base.update(changes)
    return ImageEvidence(**base)


def probs(hot: dict[str, float]) -> list[float]:
    """A [29] probability list: ``hot`` regions at their value, 0 elsewhere."""
    p = [0.0] * NUM_REGIONS
    for region, value in hot.items():
        p[REGION_INDEX[region]] = value
    return p
