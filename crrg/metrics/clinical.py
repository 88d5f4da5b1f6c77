"""Clinical efficacy (CE): do generated reports mention the same findings as the references?

Each generated report and each reference becomes a binary vector over ``labels`` (default
``crrg.labels.FINDINGS``): texts through a label extractor (default
``crrg.data.sentences.extract_findings(text) -> list[str]``), ground truth given directly as a
label dict (CheXpert values: 1 positive, 0 negative, -1 uncertain, blank/None/NaN not mentioned)
or as a collection of positive label names. Precision, recall and F1 then come from scikit-learn:
micro (pooled over every report and label), macro (mean over labels; a label with neither true
nor predicted positives scores ``zero_division``, 0 by default, as scikit-learn) and example-based
(``average="samples"``: mean over reports), plus per-label values.

Weak references. Image-level dataset labels (a Kermany "PNEUMONIA" folder, a COVID-19 class)
assess only some findings: a pneumonia image's label says nothing about consolidation. With
``unassessed="skip"`` a (report, label) pair is scored only where the reference label dict gives
that label a value (1 or 0; -1 too with ``uncertain_positive``), so a generated "consolidation"
is neither a true nor a false positive where consolidation was never assessed. A normal image
whose dict gives every finding 0 is scored on all of them. :func:`chexpert_reference` maps the
project's extra image labels onto CheXpert's 14 observations (COVID-19 -> pneumonia, nodule ->
lung lesion) for scoring in the paper's label space.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Union

import numpy as np

from crrg.labels import FINDINGS, LABELS

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
    unassessed: str = "negative",
) -> dict[str, object]:
    """CE precision/recall/F1 of ``generated`` reports against ``references``.

    ``unassessed``: ``"negative"`` (default, the usual CE protocol) counts a label a reference
    does not give as absent; ``"skip"`` leaves such (report, label) pairs out (references must
    then be label dicts; see the module docstring).

    Both are sequences of the same length whose items are report texts, label dicts or
    collections of positive label names (see the module docstring). ``extractor`` maps a text to
    finding names (default: ``crrg.data.sentences.extract_findings``). Label names are matched
    case-insensitively; names outside ``crrg.labels.LABELS`` and ``labels`` raise, names in
    LABELS but not in ``labels`` are ignored (so a subset such as the 5 CheXpert competition
    findings can be scored).
    """
    if isinstance(generated, str) or isinstance(references, str):
        raise ValueError("expected sequences of reports, got a single string")
    if len(generated) != len(references):
        raise ValueError(
            f"{len(generated)} generated but {len(references)} references; expected equal"
        )
    if unassessed not in ("negative", "skip"):
        raise ValueError(f"unassessed must be 'negative' or 'skip', got {unassessed!r}")
    y_pred = label_matrix(generated, labels, extractor, uncertain_positive)  # [N, L]
    y_true = label_matrix(references, labels, extractor, uncertain_positive)  # [N, L]
    if unassessed == "negative":
        return clinical_scores(y_true, y_pred, labels, zero_division=zero_division)
    known = assessed_matrix(references, labels, uncertain_positive)  # [N, L]
    return masked_clinical_scores(y_true, y_pred, known, labels, zero_division=zero_division)


def assessed_matrix(references: Sequence[LabelSource], labels: Sequence[str] = FINDINGS,
                    uncertain_positive: bool = False) -> np.ndarray:
    """Bool ``[N, L]``: the reference label dict gives the label a value (1 / 0, and -1 with
    ``uncertain_positive``); blank, missing and (by default) uncertain are not assessed."""
    index = {_norm(label): i for i, label in enumerate(labels)}
    out = np.zeros((len(references), len(labels)), dtype=bool)  # [N, L]
    for row, ref in enumerate(references):
        if not isinstance(ref, Mapping):
            raise ValueError("unassessed='skip' needs label dicts as references, got "
                             f"{type(ref).__name__}")
        for name, value in ref.items():
            key = _norm(name)
            if key not in index or value is None or isinstance(value, str) and not value.strip():
                continue
            number = float(value)  # type: ignore[arg-type]
            if number in (0, 1) or (uncertain_positive and number == -1):
                out[row, index[key]] = True
    return out


def masked_clinical_scores(y_true: np.ndarray, y_pred: np.ndarray, known: np.ndarray,
                           labels: Sequence[str], *, zero_division: float = 0.0) -> dict[str, object]:
    """:func:`clinical_scores` over the ``known`` entries only (same keys, plus ``n_scored``:
    the number of (report, label) pairs scored). With every entry known it equals
    :func:`clinical_scores`."""
    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    known = np.asarray(known, dtype=bool)
    if not (y_true.shape == y_pred.shape == known.shape) or y_true.ndim != 2 or y_true.shape[1] != len(labels):
        raise ValueError(f"expected y_true, y_pred and known of shape [N, {len(labels)}], got "
                         f"{y_true.shape}, {y_pred.shape} and {known.shape}")
    if y_true.shape[0] == 0:
        raise ValueError("no reports to score: expected at least one")
    tp = (y_true & y_pred & known).astype(np.int64)  # [N, L]
    fp = (~y_true & y_pred & known).astype(np.int64)  # [N, L]
    fn = (y_true & ~y_pred & known).astype(np.int64)  # [N, L]

    def prf(tp_: np.ndarray, fp_: np.ndarray, fn_: np.ndarray) -> tuple[np.ndarray, ...]:
        """Element-wise P, R, F1 with scikit-learn's zero_division convention."""
        tp_, fp_, fn_ = (np.asarray(x, dtype=np.float64) for x in (tp_, fp_, fn_))
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(tp_ + fp_ > 0, tp_ / (tp_ + fp_), zero_division)
            r = np.where(tp_ + fn_ > 0, tp_ / (tp_ + fn_), zero_division)
            f = np.where(2 * tp_ + fp_ + fn_ > 0, 2 * tp_ / (2 * tp_ + fp_ + fn_), zero_division)
        return p, r, f

    result: dict[str, object] = {"n_reports": int(y_true.shape[0]), "n_scored": int(known.sum())}
    micro = prf(tp.sum(), fp.sum(), fn.sum())
    per_label = prf(tp.sum(0), fp.sum(0), fn.sum(0))  # each [L]
    per_report = prf(tp.sum(1), fp.sum(1), fn.sum(1))  # each [N]
    for name, values in (("micro", micro), ("macro", [v.mean() for v in per_label]),
                         ("example", [v.mean() for v in per_report])):
        for metric, value in zip(("precision", "recall", "f1"), values):
            result[f"{name}_{metric}"] = float(value)
    result["per_label"] = {
        label: {
            "precision": float(per_label[0][i]),
            "recall": float(per_label[1][i]),
            "f1": float(per_label[2][i]),
            "support": int((y_true & known)[:, i].sum()),
            "predicted": int((y_pred & known)[:, i].sum()),
            "assessed": int(known[:, i].sum()),
        }
        for i, label in enumerate(labels)
    }
    return result


# Image labels outside CheXpert's 14 observations -> the observation they imply there.
CHEXPERT_IMPLIED: dict[str, str] = {"covid-19": "pneumonia", "nodule": "lung lesion"}


def chexpert_reference(labels: Mapping[str, object]) -> dict[str, object]:
    """An image label dict in CheXpert's label space: a positive extra label sets the
    observation it implies (:data:`CHEXPERT_IMPLIED`) to 1; the extra labels are dropped."""
    out = {name: value for name, value in labels.items() if _norm(name) not in CHEXPERT_IMPLIED}
    for extra, implied in CHEXPERT_IMPLIED.items():
        value = next((v for k, v in labels.items() if _norm(k) == extra), None)
        if value is not None and _is_positive(value, False):
            out[implied] = 1
    return out


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
    known = set(index) | {_norm(f) for f in LABELS}
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
