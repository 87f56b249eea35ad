"""The fault suite's ledger: each test records what it injected and what came out, and the
run ends with one table (also written to test-artifacts/faults.md for the README)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class FaultRecord:
    fault: str
    injected: int
    photos: int
    lost: int
    duplicated: int
    recovery_s: float | None = None


LEDGER: list[FaultRecord] = []


@pytest.fixture
def ledger() -> list[FaultRecord]:
    return LEDGER


def table() -> list[str]:
    lines = [
        "| fault | injected | photos | lost | duplicated | recovery |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in LEDGER:
        recovery = "-" if r.recovery_s is None else f"{r.recovery_s:.1f} s"
        lines.append(
            f"| {r.fault} | {r.injected} | {r.photos} | {r.lost} | {r.duplicated} | {recovery} |"
        )
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not LEDGER:
        return
    terminalreporter.section("fault suite")
    for line in table():
        terminalreporter.write_line(line)
    out = REPO / "test-artifacts" / "faults.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(table()) + "\n")
