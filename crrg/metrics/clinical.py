"""Clinical efficacy (CE): do generated reports mention the same findings as the references?

Each generated report and each reference becomes a binary vector over ``labels`` (default
``crrg.labels.FINDINGS``): texts through a label extractor (default
``crrg.data.sentences.extract_findings(text) -> list[str]``), ground truth given directly as a
label dict (CheXpert values: 1 positive, 0 negative, -1 uncertain, blank/None/NaN not mentioned)
or as a collection of positive label names. Precision, recall and F1 then come from scikit-learn:
micro (pooled over every report and label), macro (mean over labels; a label with neither true
nor predicted positives scores ``zero_division``, 0 by default, as scikit-learn) and example-based
(``average="samples"``: mean over reports), plus per-label values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Union

import numpy as np

from crrg.labels import FINDINGS

logger = logging.getLogger(__name__)

LabelSource = Union[str, Mapping[str, object], Iterable[str]]
Extractor = Callable[[str], Iterable[str]]


def compute_clinical(
    generated: Sequence[LabelSource],
    references: Sequence[LabelSource],
    *,
    labels: Sequence[str] = FINDINGS,
    extractor: Extractor | None = None,
    uncertain_positive: bool = False,
    zero_division: float = 0.0,
) -> dict[str, object]:
    """CE precision/recall/F1 of ``generated`` reports against ``references``.

    Both are sequences of the same length whose items are report texts, label dicts or
    collections of positive label names (see the module docstring). ``extractor`` maps a text to
    finding names (default: ``crrg.data.sentences.extract_findings``). Label names are matched
    case-insensitively; names outside ``crrg.labels.FINDINGS`` and ``labels`` raise, names in
    FINDINGS but not in ``labels`` are ignored (so a subset such as the 5 CheXpert competition
    findings can be scored).
    """
    if isinstance(generated, str) or isinstance(references, str):
        raise ValueError("expected sequences of reports, got a single string")
    if len(generated) != len(references):
        raise ValueError(
            f"{len(generated)} generated but {len(references)} references; expected equal"
        )
    y_pred = label_matrix(generated, labels, extractor, uncertain_positive)  # [N, L]
    y_true = label_matrix(references, labels, extractor, uncertain_positive)  # [N, L]
    return clinical_scores(y_true, y_pred, labels, zero_division=zero_division)


def clinical_scores(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], *, zero_division: float = 0.0
) -> dict[str, object]:
    """Micro / macro / example-based P, R, F1 and per-label values from binary ``[N, L]`` arrays.

    Returns flat keys ``{micro,macro,example}_{precision,recall,f1}``, ``n_reports``, and
    ``per_label``: ``{label: {"precision", "recall", "f1", "support", "predicted"}}``.
    """
    from sklearn.metrics import precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 2 or y_true.shape[1] != len(labels):
        raise ValueError(
            f"expected y_true and y_pred of shape [N, {len(labels)}], got "
            f"{y_true.shape} and {y_pred.shape}"
        )
    if y_true.shape[0] == 0:
        raise ValueError("no reports to score: expected at least one")
    result: dict[str, object] = {"n_reports": int(y_true.shape[0])}
    for average, name in (("micro", "micro"), ("macro", "macro"), ("samples", "example")):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=zero_division
        )
        result[f"{name}_precision"] = float(p)
        result[f"{name}_recall"] = float(r)
        result[f"{name}_f1"] = float(f)
    p, r, f, support = precision_recall_fscore_support(
        y_true, y_pred, average=None, zero_division=zero_division
    )
    result["per_label"] = {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
            "predicted": int(y_pred[:, i].sum()),
        }
        for i, label in enumerate(labels)
    }
    return result


def label_matrix(
    items: Sequence[LabelSource],
    labels: Sequence[str] = FINDINGS,
    extractor: Extractor | None = None,
    uncertain_positive: bool = False,
) -> np.ndarray:
    """Items (texts, label dicts, collections of names) -> binary int64 ``[N, L]``."""
    index = {_norm(label): i for i, label in enumerate(labels)}
    if len(index) != len(labels):
        raise ValueError(f"labels must be distinct, got {list(labels)}")
    known = set(index) | {_norm(f) for f in FINDINGS}
    out = np.zeros((len(items), len(labels)), dtype=np.int64)  # [N, L]
    for row, item in enumerate(items):
        for name in _positives(item, extractor, uncertain_positive):
            key = _norm(name)
            if key not in known:
                raise ValueError(
                    f"unknown finding label {name!r}; expected one of {sorted(known)}"
                )
            if key in index:
                out[row, index[key]] = 1
    return out


def _positives(
    item: LabelSource, extractor: Extractor | None, uncertain_positive: bool
) -> list[str]:
    if isinstance(item, str):
        return list((extractor or _default_extractor())(item))
    if isinstance(item, Mapping):
        return [name for name, value in item.items() if _is_positive(value, uncertain_positive)]
    if isinstance(item, Iterable):
        return list(item)
    raise ValueError(
        "expected a report text, a label dict or a collection of label names, "
        f"got {type(item).__name__}"
    )


def _is_positive(value: object, uncertain_positive: bool) -> bool:
    if value is None or isinstance(value, str) and not value.strip():
        return False
    number = float(value)  # type: ignore[arg-type]
    if math.isnan(number):
        return False
    return number == 1 or (uncertain_positive and number == -1)


def _norm(name: str) -> str:
    return " ".join(str(name).replace("_", " ").lower().split())


def _default_extractor() -> Extractor:
    try:
        from crrg.data.sentences import extract_findings
    except ImportError as err:
        raise ImportError(
            "the default CE label extractor crrg.data.sentences.extract_findings is not "
            "available; pass extractor=<callable text -> list of finding names>"
        ) from err
    return extract_findings
