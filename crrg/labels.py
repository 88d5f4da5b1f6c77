"""Image-level finding labels shared by the data layer, CLIP prompts and clinical-efficacy metrics."""

from __future__ import annotations

# CheXpert's 14 observations, lower-cased, then the extra findings this project reports.
CHEXPERT: tuple[str, ...] = (
    "no finding",
    "enlarged cardiomediastinum",
    "cardiomegaly",
    "lung opacity",
    "lung lesion",
    "edema",
    "consolidation",
    "pneumonia",
    "atelectasis",
    "pneumothorax",
    "pleural effusion",
    "pleural other",
    "fracture",
    "support devices",
)
EXTRA: tuple[str, ...] = ("nodule", "covid-19")
FINDINGS: tuple[str, ...] = CHEXPERT + EXTRA

# Default zero-shot prompts of the demo and CLI: CheXpert's observations (minus "no finding")
# plus pneumonia, COVID-19 and nodule (pneumonia is already one of CheXpert's).
DEFAULT_PROMPTS: tuple[str, ...] = tuple(f for f in FINDINGS if f != "no finding")
