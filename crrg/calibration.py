"""Calibration of binary probabilities, fitted on a validation split: temperature and Platt
scaling, and the expected calibration error (ECE) with its reliability bins.

- :class:`Temperature`: probability = sigmoid(logit / T). For a prompt pair (a two-way softmax over
  logits ``[negative, positive]``) this is the softmax at temperature T, since the positive
  probability is sigmoid(positive - negative); pass ``[N, 2]`` logits and the difference is taken.
- :class:`Platt`: probability = sigmoid(a * logit + b).

Both serialise to plain JSON dicts: ``{"temperature": T}`` and ``{"a": a, "b": b}`` (:func:`to_json`,
:func:`from_json`). :func:`apply` (numpy) and :func:`apply_torch` turn logits into calibrated
probabilities; a logit of -inf (a region that was not detected) stays probability 0.

:class:`Calibration` is a model's whole calibration, one scaling per output: written by
``train.train_heads``, stored in ``config.json`` under ``calibration`` (the flat layout
``{"abnormality": ..., "findings.<name>": ..., "image.<name>": ..., "zero_shot": ...}``) and read
by :class:`crrg.pipeline.Pipeline` and the demo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Temperature:
    """Temperature scaling: sigmoid(logit / temperature); T > 1 softens over-confident scores."""

    temperature: float = 1.0

    def scale(self, z: Any) -> Any:
        return z / self.temperature

    def to_json(self) -> dict[str, float]:
        return {"temperature": float(self.temperature)}


@dataclass(frozen=True)
class Platt:
    """Platt scaling: sigmoid(a * logit + b)."""

    a: float = 1.0
    b: float = 0.0

    def scale(self, z: Any) -> Any:
        return self.a * z + self.b

    def to_json(self) -> dict[str, float]:
        return {"a": float(self.a), "b": float(self.b)}


Scaling = Union[Temperature, Platt]
Params = Union[Scaling, Mapping[str, float], None]


def from_json(params: Mapping[str, float] | None) -> Scaling | None:
    """The calibration stored in ``config.json`` (``None`` for an empty or missing entry)."""
    if not params:
        return None
    if "temperature" in params:
        return Temperature(float(params["temperature"]))
    if "a" in params:
        return Platt(float(params["a"]), float(params.get("b", 0.0)))
    raise ValueError(f"unknown calibration {dict(params)!r}: expected 'temperature' or 'a' and 'b'")


def to_json(scaling: Scaling | None) -> dict[str, float]:
    return {} if scaling is None else scaling.to_json()


def _as_calibration(params: Params) -> Scaling | None:
    return params if isinstance(params, (Temperature, Platt)) else from_json(params)


def binary_logits(logits: Any) -> np.ndarray:
    """[N] binary logits; ``[N, 2]`` pair logits become positive minus negative (column 1 - 0)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 2 and z.shape[1] == 2:
        return z[:, 1] - z[:, 0]
    if z.ndim > 1:
        raise ValueError(f"expected [N] binary or [N, 2] pair logits, got shape {z.shape}")
    return z


def logit(probs: Any, eps: float = 1e-6) -> np.ndarray:
    """log(p / (1 - p)), with p clipped to [eps, 1 - eps]."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


def _fit(logits: Any, labels: Any, platt: bool, max_iter: int = 200) -> tuple[float, float]:
    """(scale, bias) minimising the mean log loss of sigmoid(scale * z + bias) with LBFGS.
    Temperature scaling fits log(1 / T) (so T stays positive) and no bias."""
    import torch  # lazily: reading a config's calibration (the demo's page) needs no torch

    x = torch.as_tensor(binary_logits(logits))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    if x.shape != y.shape or not len(x):
        raise ValueError(f"need as many labels as logits, got {tuple(y.shape)} and {tuple(x.shape)}")
    keep = torch.isfinite(x)
    x, y = x[keep], y[keep]
    w = torch.tensor(1.0 if platt else 0.0, dtype=torch.float64, requires_grad=True)  # a or log(1 / T)
    b = torch.zeros((), dtype=torch.float64, requires_grad=platt)
    params = [w, b] if platt else [w]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        scale = w if platt else w.exp()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scale * x + b, y)
        loss.backward()
        return loss

    opt.step(closure)
    scale = float(w.detach()) if platt else float(w.detach().exp())
    return scale, float(b.detach())


def fit_temperature_scaling(logits: Any, labels: Any) -> Temperature:
    """Temperature T of [N] binary or [N, 2] pair logits, fitted on validation labels (0 / 1)."""
    scale, _ = _fit(logits, labels, platt=False)
    return Temperature(1.0 / scale)


def fit_platt_scaling(logits: Any, labels: Any) -> Platt:
    """Platt a, b of [N] binary (or [N, 2] pair) logits, fitted on validation labels (0 / 1)."""
    a, b = _fit(logits, labels, platt=True)
    return Platt(a, b)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow; sigmoid(-inf) = 0


def apply(params: Params, logits: Any) -> np.ndarray:
    """Calibrated probabilities of [N] binary or [N, 2] pair logits (a plain sigmoid without
    ``params``); infinite logits keep their sign."""
    z = binary_logits(logits)
    calibration = _as_calibration(params)
    if calibration is not None:
        with np.errstate(invalid="ignore"):
            z = np.where(np.isfinite(z), calibration.scale(z), z)
    return _sigmoid(z)


def apply_torch(params: Params, logits: torch.Tensor) -> torch.Tensor:
    """:func:`apply` on a tensor of binary logits (any shape); infinite logits keep their sign."""
    import torch

    calibration = _as_calibration(params)
    if calibration is not None:
        logits = torch.where(torch.isfinite(logits), calibration.scale(logits), logits)
    return torch.sigmoid(logits)


FINDINGS_PREFIX, IMAGE_PREFIX = "findings.", "image."


@dataclass(frozen=True)
class Calibration:
    """A model's calibration, one scaling per output (``None`` / absent: a plain sigmoid).

    ``abnormality``: the region abnormality head; ``findings``: region-level finding heads, by
    finding; ``image_findings``: image-level finding heads, by finding; ``zero_shot``: the
    zero-shot prompt-pair logit (one temperature for every prompt)."""

    abnormality: Scaling | None = None
    findings: Mapping[str, Scaling] = field(default_factory=dict)
    image_findings: Mapping[str, Scaling] = field(default_factory=dict)
    zero_shot: Scaling | None = None

    def __bool__(self) -> bool:
        return any((self.abnormality, self.findings, self.image_findings, self.zero_shot))

    def to_json(self) -> dict[str, dict[str, float]]:
        """The flat ``config.json`` layout (outputs without a scaling left out)."""
        out: dict[str, dict[str, float]] = {}
        if self.abnormality is not None:
            out["abnormality"] = self.abnormality.to_json()
        out.update({FINDINGS_PREFIX + k: v.to_json() for k, v in self.findings.items()})
        out.update({IMAGE_PREFIX + k: v.to_json() for k, v in self.image_findings.items()})
        if self.zero_shot is not None:
            out["zero_shot"] = self.zero_shot.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, float]] | None) -> Calibration:
        """From the flat ``config.json`` layout; an unknown output name is an error."""
        data = dict(data or {})
        findings, image, rest = {}, {}, {}
        for key, params in data.items():
            scaling = from_json(params)
            if scaling is None:
                continue
            if key.startswith(FINDINGS_PREFIX):
                findings[key.removeprefix(FINDINGS_PREFIX)] = scaling
            elif key.startswith(IMAGE_PREFIX):
                image[key.removeprefix(IMAGE_PREFIX)] = scaling
            elif key in ("abnormality", "zero_shot"):
                rest[key] = scaling
            else:
                raise ValueError(f"unknown calibrated output {key!r}: expected 'abnormality', 'zero_shot', "
                                 f"'{FINDINGS_PREFIX}<finding>' or '{IMAGE_PREFIX}<finding>'")
        return cls(findings=findings, image_findings=image, **rest)


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    confidence: float  # mean predicted probability in the bin
    accuracy: float  # fraction of positives in the bin
    count: int


@dataclass(frozen=True)
class Reliability:
    """ECE and the non-empty bins of the reliability diagram."""

    ece: float
    bins: tuple[ReliabilityBin, ...]
    n: int

    def to_json(self) -> dict[str, Any]:
        return {"ece": self.ece, "n": self.n, "bins": [asdict(b) for b in self.bins]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reliability:
        return cls(float(data["ece"]), tuple(ReliabilityBin(**b) for b in data["bins"]), int(data["n"]))


def expected_calibration_error(probs: Any, labels: Any, bins: int = 15) -> Reliability:
    """Binary ECE over ``bins`` equal-width bins of the positive probability:
    sum_b (n_b / n) |mean(p in b) - mean(y in b)|. Bins are [lower, upper), the last one [lower, 1]."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"need as many labels as probabilities, got {y.shape} and {p.shape}")
    if not len(p):
        return Reliability(0.0, (), 0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece, rows = 0.0, []
    for b in range(bins):
        mask = index == b
        if not mask.any():
            continue
        conf, acc = float(p[mask].mean()), float(y[mask].mean())
        ece += float(mask.mean()) * abs(conf - acc)
        rows.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), conf, acc, int(mask.sum())))
    return Reliability(float(ece), tuple(rows), len(p))
