"""Evaluation metrics of the paper: NLG (pycocoevalcap), clinical efficacy, classification AUC.

Submodules import their heavy dependencies (scikit-learn, matplotlib, pycocoevalcap) lazily.
"""

from __future__ import annotations

from crrg.metrics.classification import binary_metrics, compute_classification, roc_curve_png
from crrg.metrics.clinical import (chexpert_reference, clinical_scores, compute_clinical, label_matrix,
                                   masked_clinical_scores)
from crrg.metrics.nlg import NLG_KEYS, NLGScores, compute_nlg, compute_nlg_detailed

__all__ = [
    "NLG_KEYS",
    "NLGScores",
    "binary_metrics",
    "chexpert_reference",
    "clinical_scores",
    "compute_classification",
    "compute_clinical",
    "compute_nlg",
    "compute_nlg_detailed",
    "label_matrix",
    "masked_clinical_scores",
    "roc_curve_png",
]
