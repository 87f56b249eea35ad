"""Temperature scaling and the expected calibration error, on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from fruitstream.core.calibration import expected_calibration_error, fit_temperature


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_ece_of_an_overconfident_model() -> None:
    # Right 70% of the time and always 99% sure: off by 0.29.
    conf = np.full(100, 0.99)
    right = np.arange(100) < 70
    assert expected_calibration_error(conf, right) == pytest.approx(0.29)


def test_ece_is_zero_when_confidence_matches_accuracy() -> None:
    conf = np.r_[np.full(10, 0.55), np.full(10, 0.95)]
    right = np.r_[np.arange(10) < 5.5, np.arange(10) < 9.5]  # 6 of 10, then 10 of 10
    assert expected_calibration_error(conf, right) == pytest.approx(0.05, abs=1e-9)
    assert expected_calibration_error([], []) == 0.0


def test_temperature_recovers_the_scale_and_lowers_the_ece() -> None:
    """Labels drawn from softmax(z); the model reports softmax(3 z), far too sure."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, size=(4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(z)])
    logits = 3.0 * z
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    before = softmax(logits)
    after = softmax(logits / t)
    ece_before = expected_calibration_error(before.max(1), before.argmax(1) == labels)
    ece_after = expected_calibration_error(after.max(1), after.argmax(1) == labels)
    assert ece_after < ece_before / 3
    assert ece_after < 0.03


def test_temperature_without_photos_is_neutral() -> None:
    assert fit_temperature(np.zeros((0, 3), np.float32), np.zeros(0, np.int64)) == 1.0
