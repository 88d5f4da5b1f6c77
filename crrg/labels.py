"""Image-level finding labels shared by the data layer, CLIP prompts and clinical-efficacy metrics.

Also the one place where a dataset's own label names become these names (:data:`NIH_MAP`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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

# Findings a source labels but the model does not report (yet): NIH ChestX-ray14's own findings
# with no name above, and TBX11K's tuberculosis. They are kept in the prepared labels so a later
# head can train on them; CLIP label vectors, prompts and CE metrics stay over FINDINGS.
UNREPORTED: tuple[str, ...] = (
    "infiltration", "mass", "emphysema", "fibrosis", "pleural thickening", "hernia", "tuberculosis")
LABELS: tuple[str, ...] = FINDINGS + UNREPORTED  # every name a record's labels may use

# Default zero-shot prompts of the demo and CLI: CheXpert's observations (minus "no finding")
# plus pneumonia, COVID-19 and nodule (pneumonia is already one of CheXpert's).
DEFAULT_PROMPTS: tuple[str, ...] = tuple(f for f in FINDINGS if f != "no finding")


# ------------------------------------------------------------------ NIH ChestX-ray14 label map
@dataclass(frozen=True)
class NihRule:
    """How one finding is read from NIH's 14 labels.

    ``sources``: the NIH labels that make it present (any of them). ``complete``: NIH's labels
    cover every way the finding is written, so the finding is absent when all ``sources`` are 0;
    otherwise it is absent only on a "No Finding" image and unknown on other images.
    """

    sources: tuple[str, ...]
    complete: bool = True


NIH_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")

#: NIH ChestX-ray14 labels -> the project's findings. A finding keeps the meaning the project's
#: report vocabulary gives it (:func:`crrg.data.sentences.extract_findings` of the NIH word is the
#: positive mapping into FINDINGS: "infiltration" and "fibrosis" are a lung opacity, "mass" a lung
#: lesion, "nodule" a nodule and a lung lesion, "pleural thickening" pleural other). Parents that
#: NIH only partly covers ("lung opacity": also haze, reticulation, densities; "lung lesion": also
#: cavities and tumours named otherwise; "pleural other") are not ``complete``. NIH does not assess
#: enlarged cardiomediastinum, fracture, support devices or tuberculosis: never set (unknown).
#: COVID-19 is absent on every image: the NIH images were taken 1992-2015, before the disease.
NIH_MAP: dict[str, NihRule] = {
    "atelectasis": NihRule(("Atelectasis",)),
    "cardiomegaly": NihRule(("Cardiomegaly",)),
    "pleural effusion": NihRule(("Effusion",)),
    "pneumonia": NihRule(("Pneumonia",)),
    "pneumothorax": NihRule(("Pneumothorax",)),
    "consolidation": NihRule(("Consolidation",)),
    "edema": NihRule(("Edema",)),
    "nodule": NihRule(("Nodule",)),
    "lung lesion": NihRule(("Nodule", "Mass"), complete=False),
    "lung opacity": NihRule(("Infiltration", "Fibrosis"), complete=False),
    "pleural other": NihRule(("Pleural_Thickening",), complete=False),
    "covid-19": NihRule((), complete=True),
    "infiltration": NihRule(("Infiltration",)),
    "mass": NihRule(("Mass",)),
    "emphysema": NihRule(("Emphysema",)),
    "fibrosis": NihRule(("Fibrosis",)),
    "pleural thickening": NihRule(("Pleural_Thickening",)),
    "hernia": NihRule(("Hernia",)),
}


def nih_labels(flags: Mapping[str, int]) -> dict[str, int]:
    """Project labels (1 present / 0 absent; unknown findings left out) from NIH's 14 0/1 flags.

    ``flags`` maps each of :data:`NIH_LABELS` to 0 or 1 (all 0: a "No Finding" image, which gets
    ``"no finding": 1`` and every finding NIH assesses absent). Order follows :data:`LABELS`.
    """
    missing = [name for name in NIH_LABELS if name not in flags]
    if missing:
        raise ValueError(f"NIH flags lack {missing}; expected all of {list(NIH_LABELS)}")
    positive = {name for name in NIH_LABELS if int(flags[name]) == 1}
    normal = not positive
    out: dict[str, int] = {"no finding": int(normal)}
    for finding, rule in NIH_MAP.items():
        if positive.intersection(rule.sources):
            out[finding] = 1
        elif rule.complete or normal:
            out[finding] = 0
    return {name: out[name] for name in LABELS if name in out}
