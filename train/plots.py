"""Loss curves as PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def _smooth(values: list[float], weight: float) -> list[float]:
    """Exponential moving average (TensorBoard-style), bias-corrected."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def plot_history(history: list[dict[str, float]], path: str | Path, title: str = "",
                 smooth: float = 0.8) -> Path | None:
    """One panel per logged ``loss*`` key (train entries, and ``val_*`` entries when present).

    ``history`` rows are ``{"step": int, "loss": ..., "loss_x": ..., "val_loss": ...}``.
    Returns the PNG path, or ``None`` when there is nothing to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for row in history for k in row if k.startswith("loss")})
    if not keys:
        return None
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in history if key in r]
        steps, values = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(steps, values, alpha=0.3, color="C0")
        ax.plot(steps, _smooth(values, smooth), color="C0", label="train")
        val = [(r["step"], r["val_" + key]) for r in history if "val_" + key in r]
        if val:
            ax.plot([p[0] for p in val], [p[1] for p in val], "o-", color="C1", label="val")
            ax.legend()
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
