"""The held-out sets' one table, and ``fruitstream quality`` (``make quality``) reading it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fruitstream.entrypoints import cli
from fruitstream.heldout import GUARDED, HELD_OUT, REPORTED


def test_the_gates_are_the_ones_make_quality_had() -> None:
    gates = {s.folder: s.gate.thresholds() for s in HELD_OUT}
    assert gates["studio/test"]["min_accuracy"] == 0.99
    assert gates["grocery/val"] == {
        "min_accuracy": 0.92,
        "min_balanced_accuracy": 0.89,
        "max_fruit_rejection": 0.06,
        "min_rejection": None,
    }
    assert gates["wild/val"] == {
        "min_accuracy": 0.77,
        "min_balanced_accuracy": 0.61,
        "max_fruit_rejection": 0.18,
        "min_rejection": 0.70,
    }
    assert gates["not-fruit/val"]["min_rejection"] == 0.96
    assert gates["other-fruit/test"]["min_rejection"] == 0.95


def test_names_the_card_and_the_guard_use() -> None:
    assert [s.metric for s in REPORTED] == [
        "studio_test", "grocery_val", "wild_val", "not_fruit_val", "other_fruit_test",
    ]  # fmt: skip
    assert [s.folder for s in GUARDED] == [
        "studio/test", "grocery/val", "not-fruit/val", "other-fruit/test",
    ]  # fmt: skip


def _run(
    monkeypatch: pytest.MonkeyPatch,
    reports: dict[str, dict[str, Any]],
    argv: tuple[str, ...] = ("quality", "/data"),
) -> tuple[int, list[tuple[str, str | None]]]:
    seen: list[tuple[str, str | None]] = []

    def evaluate(_clf: object, root: Path, negatives: Path | None, progress: Any = None) -> Any:
        rel = root.relative_to(Path("/data")).as_posix()
        seen.append((rel, None if negatives is None else negatives.as_posix()))
        return reports[rel]

    monkeypatch.setattr(cli, "_classifier", lambda _args: object())
    monkeypatch.setattr("fruitstream.core.evaluation.evaluate", evaluate)
    monkeypatch.setattr("fruitstream.core.evaluation.format_report", lambda _r: ["report"])
    return cli.main(list(argv)), seen


GOOD = {
    "studio/test": {"accuracy": 0.995},
    "grocery/val": {"accuracy": 0.93, "balanced_accuracy": 0.9, "rejection_rate": 0.05},
    "wild/val": {
        "accuracy": 0.79,
        "balanced_accuracy": 0.63,
        "rejection_rate": 0.15,
        "not_fruit": {"rejection_rate": 0.72},
    },
    "not-fruit/val": {"not_fruit": {"rejection_rate": 0.97}},
    "other-fruit/test": {"not_fruit": {"rejection_rate": 0.96}},
}


def test_quality_passes_when_every_gate_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    code, seen = _run(monkeypatch, GOOD)
    assert code == 0
    assert [rel for rel, _ in seen] == list(GOOD)
    assert dict(seen)["wild/val"] == "/data/wild/val-other"


def test_quality_fails_when_one_gate_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = {**GOOD, "other-fruit/test": {"not_fruit": {"rejection_rate": 0.94}}}
    code, seen = _run(monkeypatch, bad)
    assert code == 1 and len(seen) == len(GOOD)  # every set is still measured
    assert "quality gate failed: other-fruit/test: not-fruit rejection" in capsys.readouterr().err


def test_quality_reads_the_dataset_folder_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRUITSTREAM_DATASET_DIR", "/data")
    code, seen = _run(monkeypatch, GOOD, ("quality",))
    assert code == 0 and len(seen) == len(GOOD)
