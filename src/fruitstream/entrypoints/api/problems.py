"""Errors as RFC 9457 problem documents: one table from exception to status and title.

Domain errors map by class (the most specific first); FastAPI's own (validation, 404 of an
unknown path, 405) keep their status; anything else is a 500 whose detail says only that the
server failed, with the traceback in the server's log, never in the answer.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fruitstream.entrypoints.api.schemas import Problem
from fruitstream.errors import (
    BackendError,
    FruitstreamError,
    ImageError,
    ImageTooLargeError,
    NotFoundError,
)

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


class UnauthorizedError(FruitstreamError):
    """No valid bearer token."""

    def __init__(self) -> None:
        super().__init__("a valid bearer token is required (Authorization: Bearer <token>)")


class TooManyFilesError(FruitstreamError):
    """A batch over the configured number of files."""


# Exception -> (status, title), most specific first: the first match answers.
PROBLEMS: tuple[tuple[type[Exception], int, str], ...] = (
    (UnauthorizedError, 401, "Unauthorized"),
    (TooManyFilesError, 413, "Too many files"),
    (NotFoundError, 404, "Not found"),
    (ImageTooLargeError, 413, "Image too large"),
    (ImageError, 422, "Image cannot be classified"),
    (BackendError, 503, "Backend unavailable"),
    (FruitstreamError, 400, "Bad request"),
)
# Statuses a route can answer with a problem document (for the OpenAPI schema).
PROBLEM_STATUSES = (401, 404, 413, 415, 422, 503)
_HEADERS = {401: {"WWW-Authenticate": "Bearer"}}


def problem(status: int, title: str, detail: str) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail).model_dump()
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=_HEADERS.get(status))


async def _domain(_request: Request, exc: Exception) -> JSONResponse:
    for kind, status, title in PROBLEMS:
        if isinstance(exc, kind):
            return problem(status, title, str(exc))
    return await _unexpected(_request, exc)  # pragma: no cover - the table ends with the base


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    where = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors
    )
    return problem(422, "Invalid request", where or "the request does not match the API")


async def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return problem(exc.status_code, str(exc.detail), str(exc.detail))


async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
    log.exception("unexpected error in the API")
    return problem(500, "Internal error", "the server failed; the error is in its log")


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem document."""
    for kind, _status, _title in PROBLEMS:
        app.add_exception_handler(kind, _domain)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
