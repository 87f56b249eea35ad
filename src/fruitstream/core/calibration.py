"""Confidence calibration: temperature scaling and the expected calibration error (numpy only)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def _nll(logits: NDArray[np.float32], targets: NDArray[np.int64], temperature: float) -> float:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(targets)), targets].mean())


def fit_temperature(
    logits: NDArray[np.float32], targets: NDArray[np.int64], lo: float = 0.05, hi: float = 20.0
) -> float:
    """The temperature T that minimizes the negative log-likelihood of softmax(logits / T).

    The NLL is convex in 1/T, so a golden-section search over log T finds its minimum.
    """
    if len(targets) == 0:
        return 1.0
    a, b = np.log(lo), np.log(hi)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    for _ in range(80):
        if _nll(logits, targets, float(np.exp(c))) < _nll(logits, targets, float(np.exp(d))):
            b = d
        else:
            a = c
        c, d = b - ratio * (b - a), a + ratio * (b - a)
    return float(np.exp((a + b) / 2))


def expected_calibration_error(
    confidence: NDArray[np.floating] | list[float],
    correct: NDArray[np.bool_] | list[bool],
    bins: int = 10,
) -> float:
    """ECE: over equal-width confidence bins, the photo-weighted mean gap between the mean
    confidence and the share of right answers. 0 is perfect; a model right 70% of the time
    that always says 0.99 scores 0.29."""
    conf = np.asarray(confidence, dtype=np.float64)
    right = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.sum() * abs(conf[in_bin].mean() - right[in_bin].mean())
    return float(total / conf.size)
