"""Step 4: on held-out real photos, the temperature and the "known" threshold."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from fruitstream.core.calibration import expected_calibration_error, fit_temperature
from fruitstream.core.openset import operating_point
from fruitstream.model.bundle import KNOWN_RULES, NOT_NONE, TOP_FRUIT
from fruitstream.model.head import known_score
from fruitstream.training.config import REAL, SCENE, TrainConfig
from fruitstream.training.features import FeatureSet


def softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    probs: NDArray[np.float32] = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return probs


def calibration_split(fs: FeatureSet, cfg: TrainConfig) -> NDArray[np.bool_]:
    """Views of a seeded share of the real photos and of the synthetic scenes, kept out of
    training to calibrate on."""
    rng = np.random.default_rng(cfg.seed + 1)
    held: set[int] = set()
    for kind, fraction in ((REAL, cfg.calib_fraction), (SCENE, cfg.calib_scene_fraction)):
        groups = np.unique(fs.groups[fs.kinds == kind])
        n = round(len(groups) * fraction)
        if n:
            held |= set(rng.choice(groups, size=n, replace=False).tolist())
    return np.isin(fs.groups, list(held))


def calibrate(
    logits: NDArray[np.float32],
    fs: FeatureSet,
    mask: NDArray[np.bool_],
    n_fruit: int,
    cfg: TrainConfig,
) -> tuple[float, float, float, dict[str, Any]]:
    """Temperature, "known" threshold (top fruit), ``reject_below`` ("none of these") and the
    figures of the held-out real photos, for the rule ``cfg.known_rule`` picks.

    Only each photo's original view counts. The temperature minimizes the negative
    log-likelihood of the 16-way softmax on the held-out real photos; the expected calibration
    error is that of the reported confidence (the top fruit's probability) against being
    right, before and after. The threshold is chosen on the held-out real photos and scenes
    together: the real ones alone are grocery photos like the training ones, on which the
    model is surer than on photos taken elsewhere (the first model trained with scenes
    rejected 10% of grocery/val fruit with a threshold chosen on real photos alone).
    """
    first_view = np.r_[True, fs.groups[1:] != fs.groups[:-1]]
    held_kinds = fs.kinds[mask]
    sel = (mask & fs.real & first_view)[mask]
    z, t = logits[sel], fs.targets[mask][sel]
    temperature = fit_temperature(z, t) if len(t) else 1.0
    fruit = t < n_fruit
    before, after = softmax(z), softmax(z / temperature)
    pool = first_view[mask] & ((held_kinds == REAL) | (held_kinds == SCENE))
    pool_probs = softmax(logits[pool] / temperature)
    pool_fruit = fs.targets[mask][pool] < n_fruit

    # Each rule's score on the pool and its threshold (known when the score reaches it).
    pool_scores = {rule: known_score(pool_probs, n_fruit, rule) for rule in KNOWN_RULES}
    cuts = {
        rule: operating_point(
            s[pool_fruit], s[~pool_fruit], cfg.max_fruit_rejection, cfg.min_not_fruit_rejection
        )
        for rule, s in pool_scores.items()
    }
    threshold = cuts[TOP_FRUIT]
    reject_below = 1.0 - cuts[NOT_NONE]  # known when p(none) < 1 - the score's cut
    cut, pool_score = cuts[cfg.known_rule], pool_scores[cfg.known_rule]
    score_all = known_score(after, n_fruit, cfg.known_rule)
    score, score_other = score_all[fruit], score_all[~fruit]
    top = after[fruit, :n_fruit].max(1)
    pred = after[fruit, :n_fruit].argmax(1)
    correct = pred == t[fruit]
    report = {
        "real_photos": len(t),
        "temperature": float(temperature),
        "known_rule": cfg.known_rule,
        "real_top1": float(correct.mean()) if fruit.any() else 0.0,
        "real_fruit_rejected": float((score < cut).mean()) if fruit.any() else 0.0,
        "not_fruit_rejected": float((score_other < cut).mean()) if (~fruit).any() else 0.0,
        "ece_before": expected_calibration_error(
            before[fruit, :n_fruit].max(1), before[fruit, :n_fruit].argmax(1) == t[fruit]
        ),
        "ece_after": expected_calibration_error(top, correct),
    }
    scenes = held_kinds[pool] == SCENE
    if scenes.any():
        scene_score, scene_fruit = pool_score[scenes], pool_fruit[scenes]
        report["scenes"] = int(scenes.sum())
        report["scene_fruit_rejected"] = float((scene_score[scene_fruit] < cut).mean())
        report["scene_negatives_rejected"] = float((scene_score[~scene_fruit] < cut).mean())
    return float(temperature), threshold, float(reject_below), report
