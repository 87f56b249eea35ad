"""Summaries of a session's results: counts per fruit, confidence, unknowns, errors, rate."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fruitstream.domain import ResultRow, Status, result_columns

CSV_FIELDS = [name for name, _ in result_columns()]


@dataclass(frozen=True)
class SessionStats:
    total: int
    ok: int
    errors: int
    unknown: int
    mean_confidence: float | None
    images_per_second: float | None
    per_label: dict[str, int] = field(default_factory=dict)


def session_stats(rows: Sequence[ResultRow]) -> SessionStats:
    good = [r for r in rows if r.status != Status.ERROR]
    known = [r for r in good if r.known]
    confidences = [r.confidence for r in good if r.confidence is not None]
    rate = None
    if rows:
        start = min(r.submitted_at for r in rows)
        end = max(r.processed_at for r in rows)
        span = (end - start).total_seconds()
        rate = len(rows) / span if span > 0 else None
    per_label = Counter(r.label for r in known if r.label)
    return SessionStats(
        total=len(rows),
        ok=len(good),
        errors=len(rows) - len(good),
        unknown=len(good) - len(known),
        mean_confidence=sum(confidences) / len(confidences) if confidences else None,
        images_per_second=rate,
        per_label=dict(per_label.most_common()),
    )


# A cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """Text that a spreadsheet shows as text: a leading ``'`` before a formula character."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_record(row: ResultRow) -> dict[str, Any]:
    """A result row as CSV cells: JSON's ``true``/``false`` for booleans, empty for null."""
    data = row.to_dict()
    data["top_k"] = json.dumps(data["top_k"])
    cells = {k: json.dumps(v) if isinstance(v, bool) else v for k, v in data.items()}
    return {key: csv_safe(value) for key, value in cells.items()}


def csv_bytes(rows: Sequence[ResultRow]) -> bytes:
    """The session's results as a CSV file (UTF-8, header row, one row per photo)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(csv_record(r) for r in rows)
    return buf.getvalue().encode("utf-8")
