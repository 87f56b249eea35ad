"""Training's calibration step: the "known" thresholds split held-out fruit from negatives."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fruitstream.training.calibrate import calibrate
from fruitstream.training.config import REAL, TrainConfig
from fruitstream.training.features import FeatureSet

N_FRUIT = 2


def _held_out(seed: int = 0) -> tuple[np.ndarray, FeatureSet]:
    """200 held-out real photos, one view each: fruit the head is fairly sure of, and
    negatives it gives to "none of these"; logits for apple, banana, none."""
    rng = np.random.default_rng(seed)
    n = 100
    fruit = np.zeros((n, 3), np.float32)
    fruit[:, 0] = rng.uniform(1.0, 4.0, n)  # apple, more or less surely
    negatives = np.zeros((n, 3), np.float32)
    negatives[:, 2] = rng.uniform(0.5, 4.0, n)  # "none of these", more or less surely
    negatives[:, 0] = rng.uniform(0.0, 1.0, n)
    logits = np.concatenate([fruit, negatives])
    m = len(logits)
    fs = FeatureSet(
        features=np.zeros((m, 1), np.float32),
        targets=np.array([0] * n + [N_FRUIT] * n, np.int64),
        weights=np.ones(m, np.float32),
        groups=np.arange(m, dtype=np.int64),
        kinds=np.full(m, REAL, np.int64),
        maps=np.zeros((m, 1), np.float16),
        teacher=np.zeros((m, 1), np.float16),
    )
    return logits, fs


def test_thresholds_keep_fruit_and_turn_negatives_away() -> None:
    logits, fs = _held_out()
    mask = np.ones(len(logits), bool)
    for rule in ("top-fruit", "not-none"):
        cfg = TrainConfig(data_dir=Path("."), known_rule=rule, cache_dir=None)
        temperature, threshold, reject_below, report = calibrate(logits, fs, mask, N_FRUIT, cfg)
        assert temperature > 0
        # the rule of the training config: at most 3% of fruit rejected, or 97% of negatives
        assert report["real_fruit_rejected"] <= 0.03 or report["not_fruit_rejected"] >= 0.97
        assert report["not_fruit_rejected"] >= 0.8, rule  # negatives do get turned away
        assert report["known_rule"] == rule
        assert 0.3 < threshold < 1 and 0 < reject_below < 0.7
