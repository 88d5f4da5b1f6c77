"""Evaluation tasks shared by the training and evaluation scripts (one definition, one shape)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ZeroShotTask:
    """A zero-shot task: the calibrated probability of ``label`` ("{label}" vs "no {label}"),
    scored on the images of ``source`` (truth: :func:`zero_shot_target`)."""

    name: str
    label: str
    source: str


ZERO_SHOT_TASKS: tuple[ZeroShotTask, ...] = (
    ZeroShotTask("pneumonia_vs_normal", "pneumonia", "kermany_pneumonia"),
    ZeroShotTask("covid-19_vs_normal", "covid-19", "covid_radiography"),
    ZeroShotTask("nodule_vs_none", "nodule", "jsrt_scr"),
)

#: the NIH ChestX-ray14 findings whose zero-shot AUC the evaluation reports on NIH images
NIH_ZERO_SHOT: tuple[str, ...] = ("pneumonia", "cardiomegaly", "pleural effusion", "atelectasis", "edema",
                                  "pneumothorax", "consolidation", "infiltration", "nodule", "mass")


def zero_shot_target(labels: Mapping[str, Any], label: str) -> int | None:
    """1: ``label`` present; 0: a normal study (or ``label`` absent); None: anything else."""
    if labels.get(label) == 1:
        return 1
    return 0 if labels.get("no finding") == 1 or labels.get(label) == 0 else None
