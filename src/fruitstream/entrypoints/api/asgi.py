"""ASGI's types, as the API's middlewares use them, and the request id they share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def request_id_of(scope: Scope) -> str | None:
    """The id ``access.RequestLog`` gave this request (None outside it)."""
    state = scope.get("state")
    value = state.get("request_id") if isinstance(state, Mapping) else None
    return value if isinstance(value, str) else None
