"""HTTP details of the answers: content negotiation, and the links to the next page."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

from starlette.requests import Request


def media_type(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` header, lower case, without its parameters:
    ``"application/json"`` of ``"Application/JSON; charset=utf-8"``; "" when none."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    """``application/json`` or a ``+json`` type (``application/merge-patch+json``), and
    nothing that merely begins like one (``application/jsonx``)."""
    kind = media_type(content_type)
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _preferences(accept: str) -> list[tuple[str, float]]:
    prefs = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        prefs.append((media.lower(), q))
    return prefs


def best_match(accept: str | None, offered: Sequence[str]) -> str | None:
    """The offered type the ``Accept`` header ranks highest (RFC 9110: the most specific range
    that matches gives the quality; ties go to the first offered); None when the client
    accepts none of them. No header accepts anything."""
    if not accept or not accept.strip():
        return offered[0]
    prefs = _preferences(accept)
    best, best_q = None, 0.0
    for offer in offered:
        family = offer.split("/")[0] + "/*"
        quality, specificity = None, -1
        for media, q in prefs:
            rank = 2 if media == offer else 1 if media == family else 0 if media == "*/*" else -1
            if rank > specificity:
                quality, specificity = q, rank
        if quality is not None and quality > best_q:
            best, best_q = offer, quality
    return best


# What the document says of the headers of a page that has a next one.
PAGE_HEADERS: dict[str, object] = {
    "X-Next-Cursor": {
        "description": "the cursor of the next page; absent on the last page",
        "schema": {"type": "string"},
    },
    "Link": {"description": 'the next page, rel="next"', "schema": {"type": "string"}},
}


def next_page(request: Request, cursor: str) -> dict[str, str]:
    """The headers that point to the page after this one: the same query, with ``cursor``."""
    query = {**request.query_params, "cursor": cursor}
    return {
        "X-Next-Cursor": cursor,
        "Link": f'<{request.url.path}?{urlencode(query)}>; rel="next"',
    }
