"""The adaptation benchmark's verdict (bench.adapt): would the guard let a version go live?"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fruitstream.bench.adapt import GUARDED, _guarded, _joined, _medians, format_adapt_benchmark
from fruitstream.core.adaptation import PhotoSet, scores
from fruitstream.domain import NOT_FRUIT
from fruitstream.model.head import Head

LABELS = ("apple", "banana")


def _head() -> Head:
    weight = np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3]], np.float32)
    return Head(LABELS, weight, np.zeros(3, np.float32), known_threshold=0.6)


def _sets() -> dict[str, PhotoSet]:
    rng = np.random.default_rng(0)

    def lit(dim: int, n: int, truth: str) -> PhotoSet:
        x = rng.normal(0, 0.1, (n, 3)).astype(np.float32)
        x[:, dim] += 2.0
        return PhotoSet(x, (truth,) * n)

    fruit = PhotoSet(
        np.concatenate([lit(0, 50, "apple").features, lit(1, 50, "banana").features]),
        ("apple",) * 50 + ("banana",) * 50,
    )
    negatives = lit(2, 100, NOT_FRUIT)
    return {"studio": fruit, "grocery": fruit, "not_fruit": negatives, "other_test": negatives}


def test_the_guard_passes_a_version_that_loses_nothing_and_refuses_one_that_lets_negatives_in() -> (
    None
):
    base, sets = _head(), _sets()
    figures = {name: scores(base, sets[name]) for name, _ in GUARDED}
    same = _guarded(base, sets, figures)
    assert same["guard"] == 1.0
    assert same["not_fruit"]["rejected"] == 1.0
    # A head that leans every photo towards apple answers the negatives "apple".
    lenient = replace(base, bias=np.array([8.0, 0.0, 0.0], np.float32))
    out = _guarded(lenient, sets, figures)
    assert out["not_fruit"]["rejected"] < 0.99
    assert out["guard"] == 0.0


def test_the_guard_counts_draws_where_the_rest_are_medians() -> None:
    runs = [{"wild": {"top1": v}, "guard": g} for v, g in ((0.8, 1.0), (0.9, 0.0), (0.7, 1.0))]
    med = _medians(runs)
    assert med["wild"]["top1"] == 0.8
    assert med["guard"] == 2.0


def test_taught_photos_keep_their_views_when_joined() -> None:
    a = PhotoSet(np.ones((2, 3), np.float32), ("apple",) * 2, (np.ones((4, 3)),) * 2)
    b = PhotoSet(np.zeros((1, 3), np.float32), (NOT_FRUIT,), (np.zeros((1, 3)),))
    joined = _joined(a, b)
    assert joined.truths == ("apple", "apple", NOT_FRUIT)
    assert [len(v) for v in joined.views] == [4, 4, 1]
    assert _joined(a, replace(b, views=())).views == ()  # views for all or for none


def test_the_table_names_the_worst_fruit() -> None:
    fig = {"top1": 0.9, "unknown": 0.05, "rejected": 0.97}
    k10 = {
        "wild": {**fig, "per_fruit": {"apple": 0.95, "mango": 0.76, "lime": 0.9}},
        "wild_other": fig, "grocery": fig, "studio": fig, "not_fruit": fig, "other_test": fig,
        "guard": 3.0, "fit_seconds": 4.0,
    }  # fmt: skip
    new_fruit = {"papaya_test": {"recall_known": 1.0}, "guard": 5.0, **{
        n: fig for n in ("other_test", "grocery", "studio", "not_fruit")
    }}  # fmt: skip
    report = {
        "model": "m", "draws": 5, "seed": 0, "embed_seconds": 1.0, "photos": {},
        "base": {n: fig for n in ("wild", "wild_other", "grocery", "studio", "not_fruit",
                                  "other_test")},
        "methods": {"mix": {"10": k10, "new_fruit": new_fruit}},
    }  # fmt: skip
    row = next(
        line for line in format_adapt_benchmark(report).splitlines() if line.startswith("  10")
    )
    assert " 76.0" in row and row.endswith("mango")
