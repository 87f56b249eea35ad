"""What the command line prints: one line per photo, summaries, and nothing a terminal would
run (control characters in a crafted file name print as ``?``)."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fruitstream.domain import (
    BASE_VERSION,
    MIN_NEW_CLASS_PHOTOS,
    Label,
    ModelVersion,
    ResultRow,
    Status,
)
from fruitstream.model.bundle import ModelBundle
from fruitstream.ports import Health

if TYPE_CHECKING:  # the service (and its backends) load only when a command needs them
    from fruitstream.service import FileResult
    from fruitstream.service.versions import AdaptReport

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text: object) -> str:
    """Text safe to print on a terminal: control characters (escape sequences in a crafted
    file name) shown as ``?``."""
    return _CONTROL.sub("?", str(text))


def report_skipped(skipped: Sequence[tuple[Path, str]]) -> None:
    for path, why in skipped:
        print(f"{clean(path)}: skipped: {why}", file=sys.stderr)


def describe(result: FileResult) -> str:
    path = clean(result.path)
    pred = result.prediction
    if pred is None:
        return f"{path}: error: {clean(result.error or 'unknown error')}"
    pct = f"{pred.confidence * 100:.1f}%"
    if not pred.known:
        return f"{path}: not one of the known fruits (closest: {pred.label} {pct})"
    return f"{path}: {pred.label} {pct}"


def print_summary(rows: Sequence[ResultRow]) -> None:
    from fruitstream.stats import session_stats

    stats = session_stats(rows)
    print(
        f"{stats.total} photos: {stats.ok} classified, {stats.unknown} not a known fruit, "
        f"{stats.errors} errors"
    )
    for label, count in stats.per_label.items():
        print(f"  {label:<12} {count}")


def result_line(r: ResultRow) -> str:
    """One stored result row, as ``results`` prints it."""
    if r.status == Status.ERROR:
        return f"{clean(r.filename)}: error: {clean(r.error)}"
    note = "" if r.known else " (not one of the known fruits)"
    return f"{clean(r.filename)}: {r.label} {(r.confidence or 0.0) * 100:.1f}%{note}"


def health_lines(checks: Sequence[Health]) -> list[str]:
    """``fruitstream status``: a line per check, its figures indented below it."""
    lines = []
    for h in checks:
        lines.append(f"{'ok  ' if h.ok else 'DOWN'}  {h.name:<18} {h.detail}")
        lines += [f"{'':<25}{line}" for line in h.figures]
    return lines


def config_lines(masked: dict[str, object], bundle: ModelBundle) -> list[str]:
    """``fruitstream config``: the settings as an env file, then which graph runs and why."""
    lines = [f"FRUITSTREAM_{k.upper()}={'' if v is None else v}" for k, v in masked.items()]
    return [*lines, f"# runs the {bundle.precision} graph: {bundle.precision_reason}"]


def label_line(x: Label) -> str:
    """One label: when, what the person said, what the model had said."""
    model = x.model_label or "?"
    said = model if x.model_known else f"not sure ({model})"
    return (
        f"{x.label_id}  {x.created_at:%Y-%m-%d %H:%M:%S}  {clean(x.label)}"
        f"  (model: {clean(said)}, {x.source})"
    )


def _figures(figures: dict[str, Any]) -> str:
    return ", ".join(
        f"{name} {f['live'] * 100:.1f} -> {f['new'] * 100:.1f}" for name, f in figures.items()
    )


def adapt_lines(report: AdaptReport) -> list[str]:
    """What ``adapt`` made: the version, its figures against the live one, live or why not."""
    v = report.version
    lines = [
        f"version {v.version} (from {v.parent}, {v.labels_used} labels, {v.method},"
        f" {len(v.classes)} fruits, {v.seconds:.1f} s)",
        f"  held-out sets, live -> new (%): {_figures(v.figures)}",
    ]
    for name, count in sorted(report.waiting.items()):
        lines.append(f"  {clean(name)}: {count} photos, a new fruit needs {MIN_NEW_CLASS_PHOTOS}")
    if report.unreadable:
        lines.append(f"  {report.unreadable} labelled photos could not be read: left out")
    if report.active:
        forced = " (forced past the guard)" if v.refused else ""
        lines.append(f"  live now{forced}")
    else:
        lines.append("  kept, not activated: " + "; ".join(v.refused))
        lines.append(f"  (fruitstream models activate {v.version} to use it anyway)")
    return lines


def model_lines(versions: Sequence[ModelVersion], live: str) -> list[str]:
    """``fruitstream models``: the shipped model and every adapted version, the live one marked."""
    lines = [f"{'*' if live == BASE_VERSION else ' '} {BASE_VERSION:<6} the shipped model"]
    for v in versions:
        mark = "*" if v.version == live else " "
        guard = "guard passed" if not v.refused else "guard refused: " + "; ".join(v.refused)
        lines.append(
            f"{mark} {v.version:<6} from {v.parent}, {v.labels_used} labels, {len(v.classes)}"
            f" fruits, {v.created_at:%Y-%m-%d %H:%M}, {guard}"
        )
        if v.figures:
            lines.append(f"         {_figures(v.figures)}")
    return lines
