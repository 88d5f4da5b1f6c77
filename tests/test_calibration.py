"""Calibration on known inputs: ECE of calibrated / over-confident synthetic scores, temperature
and Platt fits that recover known parameters, JSON round trips, and the pipeline applying them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from crrg.calibration import (
    Calibration, Platt, Reliability, Temperature, apply, apply_torch, expected_calibration_error,
    fit_platt_scaling, fit_temperature_scaling, from_json, logit, to_json,
)


def _synthetic(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True logits z and labels drawn with P(y = 1) = sigmoid(z): sigmoid(z) is calibrated."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return z, y


def test_ece_is_small_for_calibrated_and_large_for_overconfident_scores() -> None:
    z, y = _synthetic()
    assert expected_calibration_error(apply(None, z), y).ece < 0.02
    assert expected_calibration_error(apply(None, 4 * z), y).ece > 0.08
    rel = expected_calibration_error(apply(None, z), y, bins=10)
    assert sum(b.count for b in rel.bins) == len(y) == rel.n
    assert all(0 <= b.lower < b.upper <= 1 and b.lower <= b.confidence <= b.upper for b in rel.bins)


def test_ece_on_hand_computed_bins() -> None:
    probs = np.array([0.05, 0.05, 0.95, 0.95, 1.0])
    labels = np.array([0, 1, 1, 1, 1])
    rel = expected_calibration_error(probs, labels, bins=10)
    # bin [0, 0.1): confidence 0.05, accuracy 0.5 (2 of 5); bin [0.9, 1]: 0.96667 vs 1 (3 of 5)
    assert [(b.lower, b.count) for b in rel.bins] == [(0.0, 2), (pytest.approx(0.9), 3)]
    assert rel.ece == pytest.approx(2 / 5 * 0.45 + 3 / 5 * (1 - (0.95 + 0.95 + 1.0) / 3))
    assert expected_calibration_error([], []).ece == 0.0


def test_temperature_recovers_the_overconfidence_and_lowers_ece() -> None:
    z, y = _synthetic()
    fitted = fit_temperature_scaling(4 * z, y)
    assert fitted.temperature == pytest.approx(4.0, rel=0.08)
    before = expected_calibration_error(apply(None, 4 * z), y).ece
    after = expected_calibration_error(apply(fitted, 4 * z), y).ece
    assert after < before / 4 and after < 0.02


def test_temperature_on_prompt_pair_logits_is_a_softmax_temperature() -> None:
    z, y = _synthetic(seed=2)
    rng = np.random.default_rng(3)
    negative = rng.normal(0, 1, len(z))
    pair = np.stack([negative, negative + 3 * z], axis=1)  # softmax(pair)[:, 1] = sigmoid(3 z)
    fitted = fit_temperature_scaling(pair, y)
    assert fitted.temperature == pytest.approx(3.0, rel=0.08)
    softmax = torch.softmax(torch.as_tensor(pair) / fitted.temperature, dim=1)[:, 1].numpy()
    assert np.allclose(apply(fitted, pair), softmax, atol=1e-9)
    moderate = np.abs(3 * z) < 10  # logit clips probabilities to [1e-6, 1 - 1e-6]
    assert np.allclose(apply(fitted, logit(apply(None, pair)))[moderate], softmax[moderate], atol=1e-6)


def test_platt_recovers_a_and_b() -> None:
    z, y = _synthetic(seed=1)
    shifted = (z - 1.0) / 2.0  # true logit = 2 * shifted + 1
    fitted = fit_platt_scaling(shifted, y)
    assert fitted.a == pytest.approx(2.0, rel=0.08) and fitted.b == pytest.approx(1.0, abs=0.1)
    assert np.allclose(logit(apply(None, z)), z, atol=1e-4)


def test_json_round_trip_and_apply_forms_agree() -> None:
    for calibration in (Temperature(2.5), Platt(0.7, -0.3)):
        stored = json.loads(json.dumps({"task": to_json(calibration)}))["task"]
        assert from_json(stored) == calibration
        z = np.array([-3.0, 0.0, 2.0, -np.inf])
        assert np.allclose(apply(stored, z), apply(calibration, z))
        assert np.allclose(apply_torch(stored, torch.as_tensor(z)).numpy(), apply(calibration, z))
        assert apply(calibration, z)[-1] == 0.0  # an undetected region stays at 0
    assert from_json({}) is None and from_json(None) is None and to_json(None) == {}
    with pytest.raises(ValueError, match="unknown calibration"):
        from_json({"scale": 2.0})
    z, y = _synthetic(n=2000)
    rel = expected_calibration_error(apply(None, 3 * z), y)
    assert Reliability.from_json(json.loads(json.dumps(rel.to_json()))) == rel


def test_fit_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="as many labels"):
        fit_platt_scaling(np.zeros(5), np.zeros(4))


def test_model_calibration_reads_and_writes_the_shipped_flat_layout() -> None:
    shipped = json.loads((Path(__file__).resolve().parents[1] / "assets/crrg-default/config.json").read_text())
    calibration = Calibration.from_json(shipped["calibration"])
    assert isinstance(calibration.abnormality, Platt) and isinstance(calibration.zero_shot, Temperature)
    assert set(calibration.findings) == {"nodule", "opacity", "support device"}
    assert "pneumonia" in calibration.image_findings and set(calibration.image_findings) == set(shipped["image_findings"]["findings"])
    assert calibration.to_json() == shipped["calibration"]
    assert Calibration.from_json(None) == Calibration() and not Calibration()
    with pytest.raises(ValueError, match="unknown calibrated output"):
        Calibration.from_json({"abnormal": {"a": 1.0, "b": 0.0}})


def test_pipeline_applies_the_calibration() -> None:
    import dataclasses

    from crrg.pipeline import Pipeline
    from pipeline_fixture import tiny_model

    model = tiny_model()
    model.config = dataclasses.replace(model.config, calibration=Calibration(
        abnormality=Platt(0.5, 1.0), zero_shot=Temperature(2.0)))
    pipe = Pipeline(model, device="cpu")
    batch = torch.rand(2, 1, model.config.image_size, model.config.image_size)
    found = pipe.detect(batch)
    with torch.inference_mode():
        logits = model.abnormality(found.features)  # [2, 29]
    expected = torch.sigmoid(0.5 * logits + 1.0) * found.detected
    assert torch.allclose(found.abnormality, expected, atol=1e-6)
    assert torch.allclose(found.abnormality, apply_torch(Platt(0.5, 1.0), logits) * found.detected)
    p = torch.tensor([[0.9, 0.5]])
    assert torch.allclose(pipe.calibrated_zero_shot(p), torch.sigmoid(torch.logit(p) / 2), atol=1e-6)
