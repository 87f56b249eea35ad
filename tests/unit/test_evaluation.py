"""Evaluation metrics on a tiny case worked out by hand, and the folder layouts it accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from fruitstream.core.evaluation import Answer, find_negatives_dir, metrics

LABELS = ("apple", "grape", "lime")


def ans(label: str, known: bool = True, conf: float = 0.9, *rest: str) -> Answer:
    return Answer(label, known, conf, (label, *rest))


def test_metrics_of_a_known_case() -> None:
    truths = ["apple", "apple", "apple", "apple", "grape", "grape", "lime", "lime"]
    answers = [
        ans("apple"),
        ans("apple"),
        ans("apple", False, 0.3),  # right label, but called unknown
        ans("lime", True, 0.8, "apple"),  # wrong; apple in the top 3
        ans("apple", True, 0.95, "lime", "grape"),  # grape -> apple, grape third
        ans("grape"),
        ans("lime"),
        None,  # could not be read
    ]
    negatives = [ans("lime", False, 0.2), ans("lime", True, 0.7), ans("apple", False, 0.1), None]
    names = [f"f{i}.jpg" for i in range(len(truths))]
    r = metrics(LABELS, truths, answers, negatives, names, ["n0", "n1", "n2", "n3"])
    assert r["n"] == 8 and r["failed"] == 1
    assert r["accuracy"] == pytest.approx(5 / 8)
    assert r["top3"] == pytest.approx(7 / 8)
    pc = r["per_class"]
    assert pc["apple"]["recall"] == pytest.approx(3 / 4)
    assert pc["grape"]["recall"] == pytest.approx(1 / 2)
    assert pc["lime"]["recall"] == pytest.approx(1 / 2)
    assert r["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)
    # "apple" said 4 times to fruit (3 right); lime said twice to fruit and once, known, to a
    # negative (1 right).
    assert pc["apple"]["precision"] == pytest.approx(3 / 4)
    assert pc["lime"]["precision"] == pytest.approx(1 / 3)
    assert pc["grape"]["precision"] == pytest.approx(1.0)
    assert r["rejection_rate"] == pytest.approx(1 / 8)
    assert r["confusion_pairs"] == [
        {"truth": "apple", "predicted": "lime", "n": 1},
        {"truth": "grape", "predicted": "apple", "n": 1},
    ]
    assert r["mistakes"] == [
        {"file": "f4.jpg", "truth": "grape", "answer": "apple", "confidence": 0.95},
        {"file": "f3.jpg", "truth": "apple", "answer": "lime", "confidence": 0.8},
    ]
    assert r["not_fruit"] == {
        "n": 4,
        "failed": 1,
        "rejection_rate": pytest.approx(2 / 4),
        "called": {"lime": 1},
        "mistakes": [{"file": "n1", "truth": None, "answer": "lime", "confidence": 0.7}],
    }
    # Confidences 0.9, 0.9, 0.3, 0.8, 0.95, 0.9, 0.9 against right, right, right, wrong, wrong,
    # right, right: bins 0.3 (gap 0.7), 0.8 (0.8), 0.9 (x4 right: 0.1), 0.95 (0.95).
    assert r["ece"] == pytest.approx((0.7 + 0.8 + 4 * 0.1 + 0.95) / 7)


def test_negatives_only() -> None:
    r = metrics(LABELS, [], [], [ans("apple", False), ans("grape", True)])
    assert "accuracy" not in r
    assert r["not_fruit"]["rejection_rate"] == 0.5


def test_negatives_of_a_set_are_found_beside_or_inside_it(tmp_path: Path) -> None:
    (tmp_path / "val" / "apple").mkdir(parents=True)
    assert find_negatives_dir(tmp_path / "val") is None
    (tmp_path / "val-other").mkdir()
    assert find_negatives_dir(tmp_path / "val") == tmp_path / "val-other"
    (tmp_path / "val" / "not-fruit").mkdir()
    assert find_negatives_dir(tmp_path / "val") == tmp_path / "val" / "not-fruit"
