"""Open-set scores: how much a photo looks like one of the model's fruits, measured five ways.

Every score is "higher = more like a known fruit", so one threshold rule serves them all
(``operating_point``). ``top-fruit`` and ``not-none`` read the head's probabilities (the first
is the rule of models before v4, the second theirs), ``energy`` its fruit logits; the two
distance scores compare pooled features with training photos' (``Reference``, built from the
bundle's anchors): ``mahalanobis`` to the nearest fruit's mean under a shared covariance,
``knn`` the cosine similarity to the k-th nearest training photo of a fruit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fruitstream.model.bundle import NOT_NONE, TOP_FRUIT
from fruitstream.model.head import Head, known_score, softmax, unit

SCORES = (TOP_FRUIT, NOT_NONE, "energy", "mahalanobis", "knn")
KNN_K = 5
# Shrinkage of the shared covariance toward its mean variance: fewer training photos (about
# 1,300) than feature dimensions (1,280) leave the plain estimate singular.
SHRINKAGE = 0.1

Scores = NDArray[np.float64]
AnyScores = NDArray[np.floating[Any]]


@dataclass(frozen=True)
class Reference:
    """What the distance scores compare with: per-fruit means, the shared precision matrix,
    and the unit-length features of the training photos of fruits."""

    means: NDArray[np.float64]
    precision: NDArray[np.float64]
    fruit_units: NDArray[np.float32]

    @classmethod
    def fit(
        cls, features: NDArray[np.float32], labels: Sequence[str], fruits: Sequence[str]
    ) -> Reference:
        """From training photos' features and fruit labels ("" or any non-fruit: ignored)."""
        index = {f: i for i, f in enumerate(fruits)}
        rows = np.array([lb in index for lb in labels])
        x = features[rows].astype(np.float64)
        y = np.array([index[lb] for lb in labels if lb in index])
        present = sorted(set(y.tolist()))
        if len(present) < 2:
            raise ValueError("a reference needs training photos of at least two fruits")
        means = np.stack([x[y == c].mean(axis=0) for c in present])
        centred = x - means[np.searchsorted(present, y)]
        cov = centred.T @ centred / len(x)
        cov += SHRINKAGE * np.trace(cov) / len(cov) * np.eye(len(cov))
        return cls(means=means, precision=np.linalg.inv(cov), fruit_units=unit(x))


def open_set_scores(
    head: Head, features: NDArray[np.float32], reference: Reference | None = None
) -> dict[str, Scores]:
    """Each score of each photo (rows of ``features``); the distance scores only with a
    ``reference``."""
    n = len(head.labels)
    logits = head.logits(features).astype(np.float64)
    probs = softmax(logits)
    fruit_logits = logits[:, :n]
    peak = fruit_logits.max(axis=1, keepdims=True)
    out: dict[str, Scores] = {
        # The "known" rules' own scores (the runtime's and training's), then the others.
        TOP_FRUIT: known_score(probs, n, TOP_FRUIT).astype(np.float64),
        NOT_NONE: known_score(probs.astype(np.float64), n, NOT_NONE).astype(np.float64),
        "energy": (peak[:, 0] + np.log(np.exp(fruit_logits - peak).sum(axis=1))),
    }
    if reference is not None:
        x = features.astype(np.float64)
        dists = np.stack(
            [np.einsum("ij,jk,ik->i", x - m, reference.precision, x - m) for m in reference.means],
            axis=1,
        )
        out["mahalanobis"] = -dists.min(axis=1)
        sims = unit(features) @ reference.fruit_units.T
        k = min(KNN_K, sims.shape[1])
        out["knn"] = np.sort(sims, axis=1)[:, -k].astype(np.float64)
    return out


def operating_point(
    fruit: AnyScores,
    negatives: AnyScores,
    max_fruit_rejection: float,
    min_negative_rejection: float,
) -> float:
    """The threshold (known when score >= it): the lower of two candidates, so that fruit is
    rarely rejected. One rejects at most ``max_fruit_rejection`` of the fruit photos, the other
    just reaches ``min_negative_rejection`` of the negatives. A model is surer of photos like
    its training photos than of new ones, so the fruit quantile alone sits too high for new
    photos; the negatives' side caps it where rejection is already good enough."""
    fruit_sorted, neg_sorted = np.sort(fruit), np.sort(negatives)
    candidates = []
    if len(fruit_sorted):
        allowed = int(np.floor(max_fruit_rejection * len(fruit_sorted)))
        candidates.append(float(fruit_sorted[min(allowed, len(fruit_sorted) - 1)]))
    if len(neg_sorted):
        rank = int(np.ceil(min_negative_rejection * len(neg_sorted))) - 1
        candidates.append(float(neg_sorted[max(0, min(rank, len(neg_sorted) - 1))]) + 1e-6)
    return min(candidates) if candidates else 0.5


def fruit_rejected_at(fruit: AnyScores, negatives: AnyScores, negative_rejection: float) -> float:
    """The share of fruit photos called unknown by the threshold that rejects
    ``negative_rejection`` of the negatives: one point of the trade-off curve, comparable
    across scores whatever their scale."""
    threshold = float(np.quantile(negatives, negative_rejection))
    return float((fruit < threshold).mean())


def tradeoff(
    fruit: AnyScores, negatives: AnyScores, points: int = 101
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The whole curve: for thresholds that reject 0..100% of the negatives, the share of the
    negatives rejected and of the fruit photos called unknown."""
    shares = np.linspace(0.0, 1.0, points)
    thresholds = np.quantile(negatives, shares)
    rejected = np.array([(negatives < t).mean() for t in thresholds])
    unknown = np.array([(fruit < t).mean() for t in thresholds])
    return rejected, unknown
