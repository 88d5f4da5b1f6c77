"""Calibration on known inputs: ECE of calibrated / over-confident synthetic scores, temperature
and Platt fits that recover known parameters, and the pipeline applying them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crrg.calibration import apply, expected_calibration_error, fit_platt, fit_temperature, logit


def _synthetic(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)  # true logits
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return z, y


def test_ece_is_small_for_calibrated_and_large_for_overconfident_scores() -> None:
    z, y = _synthetic()
    assert expected_calibration_error(apply(None, z), y).ece < 0.02
    assert expected_calibration_error(apply(None, 4 * z), y).ece > 0.08
    rel = expected_calibration_error(apply(None, z), y, bins=10)
    assert sum(b["count"] for b in rel.bins) == len(y)


def test_temperature_recovers_the_overconfidence_and_lowers_ece() -> None:
    z, y = _synthetic()
    params = fit_temperature(4 * z, y)
    assert params["temperature"] == pytest.approx(4.0, rel=0.08)
    before = expected_calibration_error(apply(None, 4 * z), y).ece
    after = expected_calibration_error(apply(params, 4 * z), y).ece
    assert after < before / 4


def test_platt_recovers_a_and_b() -> None:
    z, y = _synthetic(seed=1)
    shifted = (z - 1.0) / 2.0  # true logit = 2 * shifted + 1
    params = fit_platt(shifted, y)
    assert params["a"] == pytest.approx(2.0, rel=0.08) and params["b"] == pytest.approx(1.0, abs=0.1)
    assert np.allclose(logit(apply(None, z)), z, atol=1e-4)


def test_pipeline_applies_the_calibration() -> None:
    from crrg.pipeline import Pipeline
    from pipeline_fixture import tiny_model

    model = tiny_model()
    model.config.calibration = {"abnormality": {"a": 0.5, "b": 1.0}, "zero_shot": {"temperature": 2.0}}
    pipe = Pipeline(model, device="cpu")
    logits = torch.tensor([-2.0, 0.0, 3.0, -torch.inf])
    assert torch.allclose(pipe._calibrated("abnormality", logits),
                          torch.sigmoid(torch.tensor([0.0, 1.0, 2.5, -torch.inf])))
    assert torch.allclose(pipe._calibrated("unknown", logits), torch.sigmoid(logits))
    p = torch.tensor([[0.9, 0.5]])
    assert torch.allclose(pipe._zero_shot_calibrated(p), torch.sigmoid(torch.logit(p) / 2), atol=1e-6)
