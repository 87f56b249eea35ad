"""Errors as RFC 9457 problem documents: one table from exception to status and title.

Domain errors map by class (the most specific first); FastAPI's own (validation, 404 of an
unknown path, 405) keep their status; anything else is a 500 whose detail says only that the
server failed, with the traceback in the server's log, never in the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fruitstream.entrypoints.api.asgi import request_id_of
from fruitstream.entrypoints.api.schemas import Problem
from fruitstream.errors import (
    BackendError,
    CallbackError,
    ConflictError,
    CorruptImageError,
    CursorError,
    FruitstreamError,
    IdempotencyMismatchError,
    ImageError,
    ImageTooLargeError,
    LabelError,
    NotFoundError,
    TooManyPixelsError,
    UnsupportedFormatError,
    UnsupportedImageError,
)

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


class UnauthorizedError(FruitstreamError):
    """No valid bearer token."""

    def __init__(self) -> None:
        super().__init__("a valid bearer token is required (Authorization: Bearer <token>)")


class TooManyFilesError(FruitstreamError):
    """A batch over the configured number of files."""


class NotAcceptableError(FruitstreamError):
    """No media type the route can answer in is acceptable to the client."""


class UnsupportedMediaTypeError(FruitstreamError):
    """A request body in a media type the route does not take."""


@dataclass(frozen=True)
class Kind:
    """One kind of problem: its status, its title, and the stable ``type`` URI a client can
    branch on (``urn:fruitstream:problem:<slug>``, listed in docs/HTTP_API.md)."""

    status: int
    title: str
    slug: str

    @property
    def type(self) -> str:
        return f"urn:fruitstream:problem:{self.slug}"


# Exception -> kind, most specific first: the first match answers.
PROBLEMS: tuple[tuple[type[Exception], Kind], ...] = (
    (UnauthorizedError, Kind(401, "Unauthorized", "unauthorized")),
    (TooManyFilesError, Kind(413, "Too many files", "too-many-files")),
    (NotAcceptableError, Kind(406, "Not acceptable", "not-acceptable")),
    (UnsupportedMediaTypeError, Kind(415, "Unsupported media type", "unsupported-media-type")),
    (NotFoundError, Kind(404, "Not found", "not-found")),
    (CursorError, Kind(404, "Cursor not found", "unknown-cursor")),
    (ConflictError, Kind(409, "Request in progress", "request-in-progress")),
    (IdempotencyMismatchError, Kind(422, "Idempotency key reused", "idempotency-key-reused")),
    (CallbackError, Kind(422, "Callback refused", "callback-refused")),
    (LabelError, Kind(422, "Label refused", "bad-label")),
    (TooManyPixelsError, Kind(413, "Image has too many pixels", "too-many-pixels")),
    (ImageTooLargeError, Kind(413, "Image too large", "too-large")),
    (UnsupportedFormatError, Kind(422, "Unsupported image format", "unsupported-format")),
    (CorruptImageError, Kind(422, "Corrupt image", "corrupt-image")),
    (UnsupportedImageError, Kind(422, "Not an image", "not-an-image")),
    (ImageError, Kind(422, "Image cannot be classified", "image-error")),
    (BackendError, Kind(503, "Backend unavailable", "backend-down")),
    (FruitstreamError, Kind(400, "Bad request", "bad-request")),
)
# Kinds not raised as domain errors: the guard's, the framework's, the unexpected.
REQUEST_TOO_LARGE = Kind(413, "Request too large", "request-too-large")
RATE_LIMITED = Kind(429, "Too many requests", "rate-limited")
INVALID_REQUEST = Kind(422, "Invalid request", "invalid-request")
INTERNAL = Kind(500, "Internal error", "internal-error")
_HTTP = {
    400: Kind(400, "Bad request", "bad-request"),  # a body the parser cannot read
    404: Kind(404, "Not found", "not-found"),
    405: Kind(405, "Method not allowed", "method-not-allowed"),
}
# Any other status the framework raises: its own title, this type.
HTTP_ERROR = "http-error"
_HEADERS = {401: {"WWW-Authenticate": "Bearer"}}
_PROBLEM_SCHEMA = {"schema": {"$ref": "#/components/schemas/Problem"}}
# What the document says of the headers some problems come with.
_DOCUMENTED_HEADERS: dict[int, dict[str, object]] = {
    401: {
        "WWW-Authenticate": {
            "description": "the scheme to authenticate with: Bearer",
            "schema": {"type": "string"},
        }
    },
    405: {
        "Allow": {
            "description": "the methods the path allows",
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "seconds to wait before the next request",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}
# Every kind the API answers with (``http-error`` aside: its status is the framework's).
KINDS = [kind for _cls, kind in PROBLEMS] + [
    REQUEST_TOO_LARGE,
    RATE_LIMITED,
    INVALID_REQUEST,
    INTERNAL,
    *_HTTP.values(),
]


def problem_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """The problem answers an operation declares in the document: each of ``statuses`` (the
    ones its route can send), and 500, which any can; each as ``application/problem+json``
    with the types it may carry and its headers (401: ``WWW-Authenticate``, 405: ``Allow``,
    429: ``Retry-After``)."""
    declared: dict[int | str, dict[str, object]] = {}
    for status in sorted({*statuses, 500}):
        slugs = sorted({k.slug for k in KINDS if k.status == status})
        answer: dict[str, object] = {
            "description": "a problem document; type: " + ", ".join(slugs),
            "content": {PROBLEM: _PROBLEM_SCHEMA},
        }
        if status in _DOCUMENTED_HEADERS:
            answer["headers"] = _DOCUMENTED_HEADERS[status]
        declared[status] = answer
    return declared


# What every route behind the guard can answer before its own code runs: no valid token, a
# body over the route's limit, over the rate limit; and a method the path does not allow.
GUARDED = (401, 405, 413, 429)


def problem(
    kind: Kind,
    detail: str,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> JSONResponse:
    body = Problem(
        type=kind.type, title=kind.title, status=kind.status, detail=detail, request_id=request_id
    )
    return JSONResponse(
        body.model_dump(),
        status_code=kind.status,
        media_type=PROBLEM,
        headers={**_HEADERS.get(kind.status, {}), **(headers or {})},
    )


def kind_of(exc: Exception) -> Kind:
    for cls, kind in PROBLEMS:
        if isinstance(exc, cls):
            return kind
    return INTERNAL  # pragma: no cover - the table ends with the base of every domain error


def _id(request: Request) -> str | None:
    return request_id_of(request.scope)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    return problem(kind_of(exc), str(exc), request_id=_id(request))


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    where = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors
    )
    detail = where or "the request does not match the API"
    return problem(INVALID_REQUEST, detail, request_id=_id(request))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = _HTTP.get(exc.status_code) or Kind(exc.status_code, str(exc.detail), HTTP_ERROR)
    headers = dict(exc.headers or {})
    allow = getattr(request.app.state, "allowed_methods", None)
    if exc.status_code == 405 and allow is not None:
        headers["Allow"] = allow(request.scope)  # every route of the path, not the first's
    return problem(kind, str(exc.detail), headers, _id(request))


async def _unexpected(request: Request, _exc: Exception) -> JSONResponse:
    log.exception("unexpected error in the API (request %s)", _id(request))
    detail = "the server failed; the error is in its log under this request id"
    return problem(INTERNAL, detail, request_id=_id(request))


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem document."""
    for cls, _kind in PROBLEMS:
        app.add_exception_handler(cls, _domain)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
