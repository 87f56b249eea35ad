"""Summaries of a session's results: counts per fruit, confidence, unknowns, errors, rate."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from fruitstream.domain import Label, ResultRow, Status, result_columns

CSV_FIELDS = [name for name, _ in result_columns()]
LABEL_FIELDS = [f.name for f in fields(Label)]


@dataclass(frozen=True)
class SessionStats:
    total: int
    ok: int
    errors: int
    unknown: int
    mean_confidence: float | None
    images_per_second: float | None
    per_label: dict[str, int] = field(default_factory=dict)
    # From the submit to the last answer: the wait a person had, queue and workers included.
    seconds: float | None = None


def session_stats(rows: Sequence[ResultRow]) -> SessionStats:
    good = [r for r in rows if r.status != Status.ERROR]
    known = [r for r in good if r.known]
    confidences = [r.confidence for r in good if r.confidence is not None]
    rate = span = None
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
        seconds=span,
    )


# A cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """Text that a spreadsheet shows as text: a leading ``'`` before a formula character."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_cells(record: dict[str, Any]) -> dict[str, Any]:
    """A record as CSV cells: JSON for booleans (``true``/``false``) and lists, empty for
    null, text a spreadsheet shows as text."""
    return {
        key: csv_safe(json.dumps(value) if isinstance(value, bool | list) else value)
        for key, value in record.items()
    }


def csv_file(records: Iterable[dict[str, Any]], fields: Sequence[str]) -> bytes:
    """Records as a CSV file: UTF-8, a header row, one row per record."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(csv_cells(r) for r in records)
    return buf.getvalue().encode("utf-8")


def csv_bytes(rows: Sequence[ResultRow]) -> bytes:
    """The session's results as a CSV file, one row per photo."""
    return csv_file((r.to_dict() for r in rows), CSV_FIELDS)


def labels_csv(labels: Sequence[Label]) -> bytes:
    """Labels as a CSV file, one row per label."""
    return csv_file((x.to_dict() for x in labels), LABEL_FIELDS)
