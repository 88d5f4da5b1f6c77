"""Binary classification metrics (region abnormality, zero-shot findings): AUC, accuracy, ROC plot.

``y_true`` entries that are NaN are treated as missing (e.g. a region not annotated in an image)
and left out of that task. AUC is ``nan`` when a task has only one class among its known labels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def binary_metrics(y_true: Sequence[float] | np.ndarray, y_score: Sequence[float] | np.ndarray,
                   threshold: float = 0.5) -> dict[str, float]:
    """AUC (``roc_auc_score``) and accuracy of ``y_score >= threshold`` for one binary task.

    ``y_true`` holds 0/1 (NaN = missing, skipped); ``y_score`` probabilities or any scores.
    Returns ``{"auc", "accuracy", "n", "n_positive"}``.
    """
    from sklearn.metrics import accuracy_score, roc_auc_score

    t, s = _known(y_true, y_score)
    if t.size == 0:
        return {"auc": math.nan, "accuracy": math.nan, "n": 0, "n_positive": 0}
    n_pos = int(t.sum())
    auc = math.nan
    if 0 < n_pos < t.size:
        auc = float(roc_auc_score(t, s))
    else:
        logger.debug("AUC undefined: %d of %d labels positive", n_pos, t.size)
    accuracy = float(accuracy_score(t, (s >= threshold).astype(np.int64)))
    return {"auc": auc, "accuracy": accuracy, "n": int(t.size), "n_positive": n_pos}


def compute_classification(
    y_true: Sequence | np.ndarray,
    y_score: Sequence | np.ndarray,
    task_names: Sequence[str] | None = None,
    threshold: float = 0.5,
) -> dict[str, object]:
    """Per-task AUC and accuracy for ``[N]`` or ``[N, T]`` labels and scores.

    Returns ``{"tasks": {name: binary_metrics(...)}, "mean_auc", "mean_accuracy"}`` where the
    means skip tasks whose value is ``nan``; task names default to ``"task_0"``, ``"task_1"``, ....
    """
    t = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    if t.shape != s.shape or t.ndim not in (1, 2):
        raise ValueError(
            f"expected y_true and y_score of equal shape [N] or [N, T], got {t.shape} and {s.shape}"
        )
    if t.ndim == 1:
        t, s = t[:, None], s[:, None]  # [N, 1]
    names = list(task_names) if task_names is not None else [f"task_{i}" for i in range(t.shape[1])]
    if len(names) != t.shape[1]:
        raise ValueError(f"{len(names)} task names for {t.shape[1]} tasks; expected one per column")
    tasks = {name: binary_metrics(t[:, i], s[:, i], threshold) for i, name in enumerate(names)}
    return {
        "tasks": tasks,
        "mean_auc": _nanmean([m["auc"] for m in tasks.values()]),
        "mean_accuracy": _nanmean([m["accuracy"] for m in tasks.values()]),
    }


def roc_curve_png(
    y_true: Sequence[float] | np.ndarray,
    y_score: Sequence[float] | np.ndarray,
    path: str | Path,
    title: str = "ROC curve",
) -> Path:
    """Draw the ROC curve (with its AUC and the chance diagonal) to a PNG at ``path``.

    Uses matplotlib's object API on the Agg canvas (no pyplot state, safe in threads).
    Raises ``ValueError`` when ``y_true`` does not hold both classes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    t, s = _known(y_true, y_score)
    if t.size == 0 or t.min() == t.max():
        raise ValueError("a ROC curve needs both positive and negative labels in y_true")
    fpr, tpr, _ = roc_curve(t, s)
    auc = roc_auc_score(t, s)
    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(fpr, tpr, lw=2, label=f"AUC = {auc:.3f} (n = {t.size})")
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate",
           title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _known(y_true: Sequence[float] | np.ndarray, y_score: Sequence[float] | np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """1-D labels/scores with NaN labels dropped; labels as int64 0/1."""
    t = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if t.shape != s.shape:
        raise ValueError(f"y_true has {t.size} values but y_score {s.size}; expected equal")
    keep = ~np.isnan(t)
    t, s = t[keep], s[keep]
    if not np.isin(t, (0.0, 1.0)).all():
        raise ValueError("y_true must hold 0/1 labels (NaN for missing)")
    if np.isnan(s).any():
        raise ValueError("y_score contains NaN where y_true is known")
    return t.astype(np.int64), s


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
