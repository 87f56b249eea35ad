"""Outgoing HTTP POSTs (batch-complete callbacks), with the standard library, no redirects."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead anywhere, past the operator's list of allowed hosts."""

    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_json(url: str, body: bytes, headers: Mapping[str, str], timeout: float = 10.0) -> int:
    """POST ``body`` to ``url``; the status code, or 0 when no answer came (refused, timed
    out, not HTTP). Never raises for the receiver's failures: they are the caller's to retry."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return 0
