"""Calibration of binary probabilities, fitted on a validation split: Platt and temperature
scaling, and the expected calibration error (ECE).

Parameters are plain JSON dicts so they live in ``config.json`` (``CRRGConfig.calibration``):
Platt ``{"a", "b"}`` (probability = sigmoid(a * logit + b)), temperature ``{"temperature"}``
(sigmoid(logit / T)). :meth:`crrg.pipeline.Pipeline._calibrated` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _fit(logits: np.ndarray, labels: np.ndarray, platt: bool, steps: int = 200) -> tuple[float, float]:
    x = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    a = torch.ones((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=platt)
    opt = torch.optim.LBFGS([a, b] if platt else [a], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(a * x + b, y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(a.detach()), float(b.detach())


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Platt scaling: {"a", "b"} minimising the log loss of sigmoid(a * logit + b)."""
    a, b = _fit(logits, labels, platt=True)
    return {"a": a, "b": b}


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Temperature scaling: {"temperature"} minimising the log loss of sigmoid(logit / T)."""
    a, _ = _fit(logits, labels, platt=False)
    return {"temperature": float(1.0 / max(a, 1e-6))}


def apply(params: dict[str, float] | None, logits: np.ndarray) -> np.ndarray:
    """Calibrated probabilities of ``logits`` (a plain sigmoid without ``params``)."""
    z = np.asarray(logits, dtype=np.float64)
    params = params or {}
    if "temperature" in params:
        z = z / params["temperature"]
    elif "a" in params:
        z = params["a"] * z + params["b"]
    return 1.0 / (1.0 + np.exp(-z))


def logit(probs: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Reliability:
    ece: float
    bins: list[dict[str, float]]  # per non-empty bin: lower, upper, confidence, accuracy, count


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> Reliability:
    """Binary ECE over equal-width probability bins: sum_b (n_b / n) |mean(p) - mean(y)|."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    ece, rows = 0.0, []
    for b in range(bins):
        mask = index == b
        if not mask.any():
            continue
        conf, acc = float(p[mask].mean()), float(y[mask].mean())
        ece += mask.mean() * abs(conf - acc)
        rows.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "confidence": conf,
                     "accuracy": acc, "count": int(mask.sum())})
    return Reliability(float(ece), rows)
