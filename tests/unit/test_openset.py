"""Open-set scores: each says "more like a known fruit" with a higher value; the operating point
keeps its promises; the curve is the whole trade-off."""

from __future__ import annotations

import numpy as np
import pytest

from fruitstream.core.openset import (
    SCORES,
    Reference,
    fruit_rejected_at,
    open_set_scores,
    operating_point,
    tradeoff,
)
from fruitstream.model.head import Head, softmax

LABELS = ("apple", "banana")


def _world(seed: int = 0) -> tuple[Head, np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Two fruits as tight clusters in 8 dimensions, negatives elsewhere, a head that knows."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8, dtype=np.float32)[:2] * 4
    train = np.concatenate([c + rng.normal(0, 0.3, (40, 8)) for c in centres]).astype(np.float32)
    labels = ["apple"] * 40 + ["banana"] * 40
    weight = np.zeros((3, 8), np.float32)
    weight[0, 0] = weight[1, 1] = 2.0
    weight[2, 2:] = 1.0  # "none of these" answers to the other dimensions
    head = Head(LABELS, weight, np.zeros(3, np.float32), known_threshold=0.5)
    fruit = (centres[rng.integers(0, 2, 50)] + rng.normal(0, 0.3, (50, 8))).astype(np.float32)
    other = np.zeros((50, 8), np.float32)
    other[:, 2:] = rng.normal(2, 0.5, (50, 6))
    return head, train, labels, fruit, other


def test_every_score_ranks_fruit_above_negatives() -> None:
    head, train, labels, fruit, other = _world()
    ref = Reference.fit(train, labels, LABELS)
    f, o = open_set_scores(head, fruit, ref), open_set_scores(head, other, ref)
    assert set(f) == set(SCORES)
    for name in SCORES:
        assert f[name].shape == (50,)
        assert np.median(f[name]) > np.median(o[name]), name
        assert fruit_rejected_at(f[name], o[name], 0.7) < 0.1, name


def test_probability_scores_read_the_head() -> None:
    head, _, _, fruit, _ = _world()
    probs = softmax(head.logits(fruit))
    s = open_set_scores(head, fruit)
    assert np.allclose(s["top-fruit"], probs[:, :2].max(1), atol=1e-6)
    assert np.allclose(s["not-none"], 1 - probs[:, 2], atol=1e-6)
    assert "mahalanobis" not in s and "knn" not in s  # no reference, no distance scores
    # energy: log-sum-exp of the fruit logits, computed without overflow
    big = Head(LABELS, head.weight * 100, head.bias, 0.5)
    assert np.isfinite(open_set_scores(big, fruit)["energy"]).all()


def test_a_reference_needs_two_fruits_and_ignores_negatives() -> None:
    _, train, labels, _, other = _world()
    with pytest.raises(ValueError, match="two fruits"):
        Reference.fit(train[:40], labels[:40], LABELS)
    with_negatives = Reference.fit(
        np.concatenate([train, other]), labels + [""] * len(other), LABELS
    )
    plain = Reference.fit(train, labels, LABELS)
    assert np.allclose(with_negatives.means, plain.means)
    assert len(with_negatives.fruit_units) == len(train)


def test_operating_point_keeps_fruit_rejection_low_or_negative_rejection_reached() -> None:
    rng = np.random.default_rng(1)
    fruit, negatives = rng.normal(2, 1, 400), rng.normal(0, 1, 300)
    t = operating_point(fruit, negatives, 0.03, 0.97)
    assert (fruit < t).mean() <= 0.03
    # the lower candidate wins: where 97% of negatives are rejected, if that comes first
    easy = operating_point(rng.normal(10, 1, 400), negatives, 0.03, 0.97)
    assert (negatives < easy).mean() >= 0.97
    assert easy < np.quantile(rng.normal(10, 1, 400), 0.03)


def test_tradeoff_runs_from_nothing_rejected_to_everything() -> None:
    rng = np.random.default_rng(2)
    fruit, negatives = rng.normal(1, 1, 200), rng.normal(0, 1, 200)
    rejected, unknown = tradeoff(fruit, negatives)
    assert rejected[0] == 0 and rejected[-1] >= 0.99
    assert (np.diff(rejected) >= 0).all() and (np.diff(unknown) >= 0).all()
    assert unknown[0] == pytest.approx((fruit < negatives.min()).mean())
