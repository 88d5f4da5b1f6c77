"""Hand-made evidence for the report composer's tests (crrg.grounding)."""

from __future__ import annotations

from crrg.grounding import ImageEvidence
from crrg.regions import NUM_REGIONS, REGION_INDEX
from crrg.report import TOPICS

#: every report topic: what a model whose abnormality head learned region labels of every topic
#: (Chest ImaGenome) assesses; tests of the wording rules pass it so that normal statements on
#: any topic take part (tests/test_not_assessed.py tests the open-data default, lungs only)
ALL_TOPICS = tuple(name for name, _ in TOPICS)


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
