"""Request ids and the access log: one line per request, plain or JSON.

The id is the client's ``X-Request-ID`` when it is a sane token, else a new one; it is returned
in the response's ``X-Request-ID``, written into every problem body, and logged with the
method, path, status, bytes sent and time taken.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from fruitstream.entrypoints.api.asgi import App, Message, Receive, Scope, Send

log = logging.getLogger("fruitstream.api.access")
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestLog:
    """Give each request its id, return it, and log the request when it is answered."""

    def __init__(self, app: App, observe: Callable[[Scope, int, float], None]) -> None:
        self.app = app
        self.observe = observe  # the request's scope (its route matched), status, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SANE.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status, sent = 500, 0

        async def tagged(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            self.observe(scope, status, time.perf_counter() - started)
            log.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "bytes": sent,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the request's fields."""

    FIELDS = ("request_id", "method", "path", "status", "bytes", "ms")

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({k: getattr(record, k) for k in self.FIELDS if hasattr(record, k)})
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data)


class TextFormatter(logging.Formatter):
    """``time level logger message`` and, for requests, their fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{k}={getattr(record, k)}" for k in JsonFormatter.FIELDS if hasattr(record, k)]
        return " ".join([line, *fields]) if fields else line


def logging_config(json_lines: bool) -> dict[str, object]:
    """``logging.config.dictConfig`` for the server: ours, uvicorn's (its HTTP parser's
    "Invalid HTTP request received." included) and any other logger's, timestamped, on
    stderr; one JSON object a line when asked."""
    formatter = "fruitstream.entrypoints.api.access." + (
        "JsonFormatter" if json_lines else "TextFormatter"
    )
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "handlers": {"default": handler},
        # Every other logger's warnings (asyncio's, a library's, Python's own warnings) in
        # the same format: no bare line in a JSON log.
        "root": {"handlers": ["default"], "level": "WARNING"},
        "loggers": {
            "fruitstream": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": "WARNING", "propagate": False},
            # Said outright: uvicorn's own default configuration (applied by anything that
            # made a uvicorn.Config before) stops this logger's propagation.
            "uvicorn.error": {"level": "WARNING", "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
