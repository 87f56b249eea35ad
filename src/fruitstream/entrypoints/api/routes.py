"""The API's routes: HTTP in, one ``FruitService`` call, a document out."""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match
from starlette.types import Scope

from fruitstream.domain import ImageLimits, check_size
from fruitstream.entrypoints.api.deps import GUARD, Api, CallerOf, Counters, Service, tokens_of
from fruitstream.entrypoints.api.forms import read_batch
from fruitstream.entrypoints.api.guard import token_accepted
from fruitstream.entrypoints.api.labels import labels_router
from fruitstream.entrypoints.api.media import PAGE_HEADERS, best_match, media_type, next_page
from fruitstream.entrypoints.api.problems import (
    GUARDED,
    NotAcceptableError,
    UnsupportedMediaTypeError,
    problem_responses,
)
from fruitstream.entrypoints.api.schemas import (
    BINARY,
    BatchOut,
    CheckOut,
    ClassifyOut,
    PhotoOut,
    ProgressOut,
    ReadyOut,
    ResultOut,
    SessionOut,
)
from fruitstream.errors import ImageError, ImageTooLargeError
from fruitstream.pipeline import SubmitReport
from fruitstream.service import FileResult
from fruitstream.stats import csv_bytes

router = APIRouter()
# Media types of the results: JSON first (the default), or CSV.
RESULT_TYPES = ("application/json", "text/csv")
# What a classify body may be: a multipart form, raw bytes, or an image type (image/*).
_PHOTO_TYPES = ("multipart/form-data", "application/octet-stream")


@router.post(
    "/v1/classify",
    tags=["photos"],
    response_model=ClassifyOut,
    dependencies=GUARD,
    responses=problem_responses(*GUARDED, 400, 415, 422, 503),
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                        "additionalProperties": False,
                    }
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
            },
            "required": True,
        }
    },
)
async def classify(
    request: Request,
    service: Service,
    metrics: Counters,
    name: str = "upload",
    top_k: Annotated[int | None, Query(ge=1, le=50)] = None,
) -> ClassifyOut:
    """One photo, classified at once: a multipart ``file`` part or the raw body. ``top_k``:
    how many guesses to list (default ``FRUITSTREAM_TOP_K``; at most the model's fruits)."""
    filename, data = await _one_photo(request, name, service.settings.limits)
    started = time.perf_counter()
    try:
        prediction = await run_in_threadpool(service.classify_one, data, top_k)
    except ImageError:
        metrics.classify(time.perf_counter() - started, "error")
        raise
    outcome = "known" if prediction.known else "unknown"
    metrics.classify(time.perf_counter() - started, outcome)
    return ClassifyOut.model_validate(FileResult(filename, prediction).to_dict())


@router.post(
    "/v1/batches",
    tags=["batches"],
    response_model=BatchOut,
    status_code=202,
    dependencies=GUARD,
    responses={
        **problem_responses(*GUARDED, 400, 409, 415, 422, 503),
        202: {
            "description": "the batch is queued (or, for a repeated Idempotency-Key, was)",
            "headers": {
                "Idempotent-Replayed": {
                    "description": "true when this is the answer to an earlier request",
                    "schema": {"type": "string"},
                }
            },
        },
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"files": {"type": "array", "items": BINARY, "minItems": 1}},
                        "required": ["files"],
                        "additionalProperties": False,
                    }
                }
            },
            "required": True,
        }
    },
)
async def submit(
    request: Request,
    service: Service,
    metrics: Counters,
    caller: CallerOf,
    api: Api,
    name: str = "",
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
    callback: Annotated[str | None, Query(min_length=1, max_length=2000)] = None,
) -> Response:
    """Many photos through the pipeline (``files`` parts, at most
    ``FRUITSTREAM_API_MAX_BATCH_FILES``); returns the session id to follow and one entry per
    part, in order, with its ``image_id`` or why it was rejected. With an ``Idempotency-Key``
    the same key again (from the same token) gets the first answer, not a second batch.
    With a ``callback`` URL (a host the server allows) the server POSTs a signed
    ``batch.complete`` document there once the batch is complete."""
    limit = api.max_batch_files
    kind = request.headers.get("content-type", "")
    if kind and media_type(kind) != "multipart/form-data":
        raise UnsupportedMediaTypeError(f"a batch is multipart/form-data, not {kind}")
    per_photo = service.settings.limits.max_bytes
    form = await read_batch(request.stream(), kind, limit, per_photo) if kind else None
    try:
        uploads = form.uploads if form is not None else []
        if not uploads:
            missing = {"loc": ("body", "files"), "msg": "at least one file part is required"}
            raise RequestValidationError([missing])

        def work(session_id: str | None = None) -> str:
            report = service.submit(
                uploads, name, callback=callback, caller=caller, session_id=session_id
            )
            metrics.batch(queued=len(report.queued), rejected=report.submitted - len(report.queued))
            return _batch_out(report).model_dump_json()

        def once(key: str) -> tuple[str, bool]:
            # The same key with other files, name or callback is another request: 422; a
            # batch whose request died is answered as repair left it.
            fingerprint = service.fingerprint(uploads, name, callback)
            return service.once(
                key, work, fingerprint=fingerprint, recover=_batch_json, caller=caller
            )

        if idempotency_key is None:
            answer, replayed = await run_in_threadpool(work), False
        else:
            answer, replayed = await run_in_threadpool(once, idempotency_key)
    finally:
        if form is not None:
            await form.close()
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return Response(answer, 202, headers, "application/json")


def _batch_json(report: SubmitReport) -> str:
    return _batch_out(report).model_dump_json()


def _batch_out(report: SubmitReport) -> BatchOut:
    return BatchOut(
        session_id=report.session_id,
        submitted=report.submitted,
        queued=len(report.queued),
        rejected={**report.rejected, **report.not_sent},
        photos=[PhotoOut.model_validate(asdict(p)) for p in report.photos],
    )


@router.get(
    "/v1/batches",
    tags=["batches"],
    response_model=list[SessionOut],
    dependencies=GUARD,
    responses={
        **problem_responses(*GUARDED, 404, 422, 503),
        200: {"description": "a page", "headers": PAGE_HEADERS},
    },
)
def history(
    request: Request,
    response: Response,
    service: Service,
    caller: CallerOf,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: str | None = None,
) -> list[SessionOut]:
    """Past batches, newest first, ``limit`` a page (at most 1,000); the next page is at
    ``cursor`` = the ``X-Next-Cursor`` of this one."""
    page = service.sessions(limit=limit, before=cursor or None, caller=caller)
    if len(page) == limit:
        response.headers.update(next_page(request, page[-1].session.session_id))
    return [
        SessionOut.model_validate(
            {
                "session_id": s.session.session_id,
                "name": s.session.name,
                "created_at": s.session.created_at.isoformat(),
                "submitted": s.progress.submitted,
                "done": s.progress.done,
                "errors": s.progress.errors,
                "complete": s.progress.complete,
            }
        )
        for s in page
    ]


@router.get(
    "/v1/batches/{session_id}",
    tags=["batches"],
    response_model=ProgressOut,
    dependencies=GUARD,
    responses=problem_responses(*GUARDED, 404, 503),
)
def progress(session_id: str, service: Service, caller: CallerOf) -> ProgressOut:
    """How far a batch is."""
    p = service.progress(session_id, caller=caller)
    return ProgressOut.model_validate({**asdict(p), "complete": p.complete})


_PENDING_HEADERS: dict[str, object] = {
    "X-Results-Complete": {
        "description": "whether every photo has its row",
        "schema": {"type": "boolean"},
    },
    "X-Results-Pending": {
        "description": "photos still without a row",
        "schema": {"type": "integer"},
    },
}


@router.get(
    "/v1/batches/{session_id}/results",
    tags=["batches"],
    dependencies=GUARD,
    responses={
        **problem_responses(*GUARDED, 404, 406, 422, 503),
        200: {
            "description": "every photo has its row",
            "model": list[ResultOut],
            "headers": {**_PENDING_HEADERS, **PAGE_HEADERS},
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        202: {
            "description": "the batch is still running: the rows so far",
            "model": list[ResultOut],
            "headers": {**_PENDING_HEADERS, **PAGE_HEADERS},
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
    },
)
def results(
    session_id: str,
    request: Request,
    service: Service,
    caller: CallerOf,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: str | None = None,
) -> Response:
    """One row per photo, in file name order: JSON, or CSV with ``Accept: text/csv`` (406
    when neither is acceptable). 202 while photos are pending; the headers say how many.
    ``limit`` rows a page (at most 10,000); the next page is at ``cursor`` = the
    ``X-Next-Cursor`` of this one."""
    media = best_match(request.headers.get("accept"), RESULT_TYPES)
    if media is None:
        raise NotAcceptableError(f"results are {' or '.join(RESULT_TYPES)}")
    rows, progress = service.results_page(session_id, limit, cursor or None, caller=caller)
    pending = max(0, progress.submitted - progress.done)
    status = 200 if progress.complete else 202
    headers = {
        "X-Results-Complete": str(progress.complete).lower(),
        "X-Results-Pending": str(pending),
    }
    if len(rows) == limit:
        headers.update(next_page(request, rows[-1].image_id))
    if media == "text/csv":
        headers["Content-Disposition"] = f'attachment; filename="fruitstream-{session_id}.csv"'
        return Response(csv_bytes(rows), status, headers, "text/csv; charset=utf-8")
    return JSONResponse([r.to_dict() for r in rows], status, headers)


@router.get("/healthz", tags=["operations"], responses=problem_responses(405))
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["operations"],
    response_model=ReadyOut,
    responses={**problem_responses(405), 503: {"model": ReadyOut}},
)
def readyz(request: Request, service: Service) -> JSONResponse:
    """Every backend: 200 when storage, queue and results database answer, else 503. The
    details (hosts, paths, figures) only to a caller with a valid token."""
    ready, checks = service.ready()
    tokens = tokens_of(request.app)
    trusted = bool(tokens) and token_accepted(request.headers.get("authorization"), tokens)
    body = ReadyOut(
        ready=ready,
        checks=[
            CheckOut.model_validate(
                {
                    "name": h.name,
                    "ok": h.ok,
                    "detail": h.detail if trusted else ("ok" if h.ok else "down"),
                    "figures": list(h.figures) if trusted else [],
                }
            )
            for h in checks
        ],
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    tags=["operations"],
    response_class=PlainTextResponse,
    dependencies=GUARD,
    responses=problem_responses(*GUARDED, 503),
)
def prometheus(service: Service, metrics: Counters) -> PlainTextResponse:
    """Prometheus text format: requests by route and status with their latency, photos by
    outcome (this process's, and every live worker's), the model's time per photo, queue lag,
    build and model, process."""
    text = metrics.render(service.queue_lag(), service.build_info(), service.live_workers())
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


def _answer_head_and_options(router: APIRouter) -> None:
    """``HEAD`` wherever ``GET`` is (the same answer, headers only), and ``OPTIONS`` on every
    path: 204 and the methods the path allows (``Allow``)."""
    allowed: dict[str, set[str]] = {}
    for route in list(router.routes):
        if not isinstance(route, APIRoute):
            continue
        methods = set(route.methods or ())
        if "GET" in methods:
            router.add_api_route(
                route.path,
                route.endpoint,
                methods=["HEAD"],
                response_model=route.response_model,
                status_code=route.status_code,
                response_class=route.response_class,
                dependencies=route.dependencies,
                responses=route.responses,
                tags=route.tags,
                summary=f"{route.summary or route.name} (headers only)",
                name=route.name,
            )
            methods.add("HEAD")
        allowed.setdefault(route.path, set()).update(methods)
    for path, methods in allowed.items():
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        router.add_api_route(
            path,
            _options(allow, path),
            methods=["OPTIONS"],
            name="".join(c if c.isalnum() else "_" for c in path).strip("_") or "root",
            status_code=204,
            response_class=Response,
            summary="The methods this path allows",
            tags=["http"],
            responses={
                **problem_responses(),
                204: {
                    "description": "no body; the Allow header lists the methods",
                    "headers": {"Allow": {"schema": {"type": "string"}, "example": allow}},
                },
            },
        )


def _options(allow: str, path: str) -> Callable[..., Response]:
    """The ``OPTIONS`` endpoint of ``path``: it takes the path's parameters (so that the
    document declares them), and answers with ``allow``."""

    def options(**_parameters: str) -> Response:
        return Response(status_code=204, headers={"Allow": allow})

    names = re.findall(r"{(\w+)(?::\w+)?}", path)
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.Parameter(name, keyword, annotation=str) for name in names]
    options.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return options


async def _one_photo(request: Request, name: str, limits: ImageLimits) -> tuple[str, bytes]:
    """The photo of a classify request, refused past the byte limit before it is all read."""
    limit = limits.max_bytes
    kind = request.headers.get("content-type", "")
    given = media_type(kind)
    if kind and not (given in _PHOTO_TYPES or given.startswith("image/")):
        raise UnsupportedMediaTypeError(
            f"a photo is sent as multipart/form-data, application/octet-stream or image/*,"
            f" not {kind}"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise ImageTooLargeError(
            f"request is {int(declared):,} bytes, over the limit of {limit:,} bytes"
        )
    if given == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        unknown = sorted(set(form.keys()) - {"file"})
        if unknown:
            where = {"loc": ("body", unknown[0]), "msg": "unknown form field: only a 'file' part"}
            raise RequestValidationError([where])
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise ImageError("no 'file' part in the multipart body")
        if part.size is not None and part.size > limits.max_bytes:
            check_size(part.size, limits)
        return part.filename or name, await part.read()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ImageTooLargeError(f"body is over the limit of {limit:,} bytes")
    if not body:
        missing = {"loc": ("body",), "msg": "a photo is required: the body is empty"}
        raise RequestValidationError([missing])
    return name, bytes(body)


# Each router answers HEAD and OPTIONS on its own paths (an included router's routes are not
# among the including one's).
_answer_head_and_options(router)
_answer_head_and_options(labels_router)
router.include_router(labels_router)


def allowed_methods(scope: Scope) -> str:
    """The methods the request's path allows, for the ``Allow`` of a 405 (Starlette lists only
    those of the first route that matched the path)."""
    methods: set[str] = set()
    for route in [*router.routes, *labels_router.routes]:
        match, _ = route.matches(scope)
        if match != Match.NONE and isinstance(route, APIRoute):
            methods |= route.methods or set()
    return ", ".join(sorted(methods))
