"""Content negotiation of the API's results."""

from __future__ import annotations

import pytest

from fruitstream.entrypoints.api.media import best_match

OFFERED = ("application/json", "text/csv")


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("text/csv", "text/csv"),
        ("text/*", "text/csv"),
        ("text/csv;q=0.5, application/json", "application/json"),
        ("application/json;q=0.1, text/csv;q=0.9", "text/csv"),
        ("text/csv, */*;q=0", "text/csv"),
        ("application/xml", None),
        ("application/json;q=0, text/csv;q=0", None),
        ("text/csv;q=abc, application/json;q=0.1", "application/json"),
        ("TEXT/CSV", "text/csv"),
    ],
)
def test_best_match(accept: str | None, chosen: str | None) -> None:
    assert best_match(accept, OFFERED) == chosen
