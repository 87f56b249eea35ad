"""HTTP API (FastAPI, served by uvicorn): the same service as the CLI and the app, for programs.

Every route only translates: HTTP in, a ``FruitService`` call, JSON (or CSV) out. Errors are
RFC 9457 problem documents (``application/problem+json``) with a readable ``detail``; no
traceback ever reaches a client.
"""

from __future__ import annotations

import hmac
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fruitstream.config import Settings
from fruitstream.core.imaging import ImageLimits, check_size
from fruitstream.errors import (
    BackendError,
    FruitstreamError,
    ImageError,
    ImageTooLargeError,
    MissingDependencyError,
    NotFoundError,
)
from fruitstream.pipeline import Upload
from fruitstream.service import FruitService, file_record
from fruitstream.stats import csv_bytes

try:
    from fastapi import Depends, FastAPI, File, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - the 'api' extra
    raise MissingDependencyError("fastapi", "api") from exc

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
# Upper bounds of the classify latency histogram, seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


# --- response documents (they make the OpenAPI schema) --------------------------------------


class TopKOut(BaseModel):
    label: str
    confidence: float


class ClassifyOut(BaseModel):
    """Exactly the record of ``fruitstream classify --json``."""

    path: str
    label: str | None
    confidence: float | None
    known: bool | None
    top_k: list[TopKOut]
    error: str | None


class BatchOut(BaseModel):
    session_id: str
    submitted: int
    queued: int
    rejected: dict[str, str]


class ProgressOut(BaseModel):
    session_id: str
    submitted: int
    done: int
    errors: int
    complete: bool


class SessionOut(ProgressOut):
    name: str
    created_at: str


class CheckOut(BaseModel):
    name: str
    ok: bool
    detail: str
    figures: list[str]


class ReadyOut(BaseModel):
    ready: bool
    checks: list[CheckOut]


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str


# --- metrics ---------------------------------------------------------------------------------


class Metrics:
    """Counters and a latency histogram in Prometheus' text format (no client library)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.classified = 0
        self.errors = 0
        self.submitted = 0
        self.counts = [0] * len(BUCKETS)
        self.seconds = 0.0
        self.observed = 0

    def classify(self, seconds: float, ok: bool) -> None:
        with self._lock:
            if ok:
                self.classified += 1
            else:
                self.errors += 1
            self.observed += 1
            self.seconds += seconds
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.counts[i] += 1

    def batch(self, photos: int) -> None:
        with self._lock:
            self.submitted += photos

    def render(self, lag: float | None) -> str:
        with self._lock:
            lines = [
                "# HELP fruitstream_photos_classified_total Photos classified (POST /v1/classify).",
                "# TYPE fruitstream_photos_classified_total counter",
                f"fruitstream_photos_classified_total {self.classified}",
                "# HELP fruitstream_photo_errors_total Photos not classified (POST /v1/classify).",
                "# TYPE fruitstream_photo_errors_total counter",
                f"fruitstream_photo_errors_total {self.errors}",
                "# HELP fruitstream_batch_photos_total Photos submitted by POST /v1/batches.",
                "# TYPE fruitstream_batch_photos_total counter",
                f"fruitstream_batch_photos_total {self.submitted}",
                "# HELP fruitstream_classify_seconds Time to classify one photo over HTTP.",
                "# TYPE fruitstream_classify_seconds histogram",
            ]
            lines += [
                f'fruitstream_classify_seconds_bucket{{le="{bound}"}} {count}'
                for bound, count in zip(BUCKETS, self.counts, strict=True)
            ]
            lines += [
                f'fruitstream_classify_seconds_bucket{{le="+Inf"}} {self.observed}',
                f"fruitstream_classify_seconds_sum {self.seconds}",
                f"fruitstream_classify_seconds_count {self.observed}",
            ]
        if lag is not None:
            lines += [
                "# HELP fruitstream_queue_lag Photos queued and not yet classified.",
                "# TYPE fruitstream_queue_lag gauge",
                f"fruitstream_queue_lag {lag}",
            ]
        return "\n".join(lines) + "\n"


# --- the application -------------------------------------------------------------------------


class _UnauthorizedError(Exception):
    pass


class _TooManyError(Exception):
    pass


class _Streamed:
    """An uploaded part as an ``Upload`` source: read only when ``submit`` gets to it."""

    def __init__(self, part: UploadFile) -> None:
        self._part = part

    def size(self) -> int:
        if self._part.size is not None:
            return self._part.size
        self._part.file.seek(0, 2)
        size = self._part.file.tell()
        self._part.file.seek(0)
        return int(size)

    def read(self) -> bytes:
        self._part.file.seek(0)
        data: bytes = self._part.file.read()
        return data


def create_app(service: FruitService | None = None, tokens: Sequence[str] | None = None) -> Any:
    """The ASGI app over ``service`` (built from settings at start when not given).

    ``tokens``: bearer tokens accepted (from ``FRUITSTREAM_API_TOKENS`` when not given); none
    means no authentication, for a server bound to 127.0.0.1 only (``fruitstream serve``).
    """
    state: dict[str, Any] = {"service": service}
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if state["service"] is None:
            state["service"] = FruitService.create()
        svc: FruitService = state["service"]
        if svc.settings.api_worker:
            svc.ensure_consumer()  # embedded default: this process classifies the batches
        yield
        svc.stop()

    app = FastAPI(
        title="fruitstream",
        version="1",
        summary="Recognize fruit in photos: one at once, or batches through the pipeline.",
        lifespan=lifespan,
    )

    def svc() -> FruitService:
        current: FruitService | None = state["service"]
        if current is None:  # pragma: no cover - the lifespan builds it first
            raise RuntimeError("service not started")
        return current

    def allowed() -> list[str]:
        if tokens is not None:
            return list(tokens)
        return svc().settings.api_token_list

    bearer = HTTPBearer(auto_error=False)

    def authorized(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        wanted = allowed()
        if not wanted:
            return
        given = credentials.credentials if credentials is not None else ""
        if not any(hmac.compare_digest(given.encode(), t.encode()) for t in wanted):
            raise _UnauthorizedError

    guard = [Depends(authorized)]
    problems: dict[int | str, dict[str, Any]] = {
        code: {"model": Problem, "content": {PROBLEM: {}}}
        for code in (401, 404, 413, 415, 422, 503)
    }

    # --- errors as problem documents ---------------------------------------------------------

    def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Any:
        body = Problem(title=title, status=status, detail=detail).model_dump()
        return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)

    @app.exception_handler(_UnauthorizedError)
    async def _unauthorized(_request: Request, _exc: _UnauthorizedError) -> Any:
        return problem(
            401,
            "Unauthorized",
            "a valid bearer token is required (Authorization: Bearer <token>)",
            {"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(_TooManyError)
    async def _too_many(_request: Request, exc: _TooManyError) -> Any:
        return problem(413, "Too many files", str(exc))

    @app.exception_handler(NotFoundError)
    async def _not_found(_request: Request, exc: NotFoundError) -> Any:
        return problem(404, "Not found", str(exc))

    @app.exception_handler(ImageTooLargeError)
    async def _too_large(_request: Request, exc: ImageTooLargeError) -> Any:
        return problem(413, "Image too large", str(exc))

    @app.exception_handler(ImageError)
    async def _bad_image(_request: Request, exc: ImageError) -> Any:
        return problem(422, "Image cannot be classified", str(exc))

    @app.exception_handler(BackendError)
    async def _backend(_request: Request, exc: BackendError) -> Any:
        return problem(503, "Backend unavailable", str(exc))

    @app.exception_handler(FruitstreamError)
    async def _fruitstream(_request: Request, exc: FruitstreamError) -> Any:
        return problem(400, "Bad request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Any:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return problem(422, "Invalid request", where or "the request does not match the API")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Any:
        return problem(exc.status_code, str(exc.detail), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Any:
        log.exception("unexpected error in the API")
        return problem(500, "Internal error", "the server failed; the error is in its log")

    # --- routes ------------------------------------------------------------------------------

    @app.post(
        "/v1/classify",
        response_model=ClassifyOut,
        dependencies=guard,
        responses=problems,
        openapi_extra={
            "requestBody": {
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
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
    async def classify(request: Request, name: str = "upload") -> Any:
        """One photo, classified at once: a multipart ``file`` part or the raw body."""
        filename, data = await _one_photo(request, name, svc().settings.limits)
        started = time.perf_counter()
        try:
            prediction = await _in_thread(svc().classify_one, data)
        except ImageError:
            metrics.classify(time.perf_counter() - started, ok=False)
            raise
        metrics.classify(time.perf_counter() - started, ok=True)
        return file_record(filename, prediction)

    @app.post(
        "/v1/batches",
        response_model=BatchOut,
        status_code=202,
        dependencies=guard,
        responses=problems,
    )
    def submit(files: list[UploadFile] = File(...), name: str = "") -> Any:  # noqa: B008
        """Many photos through the pipeline; returns the session id to follow."""
        service = svc()
        if len(files) > service.settings.api_max_batch_files:
            raise _TooManyError(
                f"{len(files)} files, over the limit of {service.settings.api_max_batch_files}"
                " per batch"
            )
        uploads = [Upload(f.filename or f"photo-{i}", _Streamed(f)) for i, f in enumerate(files)]
        report = service.submit(uploads, name=name)
        if service.settings.api_worker:
            service.ensure_consumer()
        metrics.batch(len(uploads))
        return BatchOut(
            session_id=report.session_id,
            submitted=report.submitted,
            queued=len(report.queued),
            rejected={**report.rejected, **report.not_sent},
        )

    @app.get("/v1/batches", response_model=list[SessionOut], dependencies=guard)
    def history(limit: int = 50) -> Any:
        """Past batches, newest first."""
        return [
            SessionOut(
                session_id=s.session.session_id,
                name=s.session.name,
                created_at=s.session.created_at.isoformat(),
                submitted=s.progress.submitted,
                done=s.progress.done,
                errors=s.progress.errors,
                complete=s.progress.complete,
            )
            for s in svc().sessions(limit=max(1, min(limit, 1000)))
        ]

    @app.get(
        "/v1/batches/{session_id}",
        response_model=ProgressOut,
        dependencies=guard,
        responses=problems,
    )
    def progress(session_id: str) -> Any:
        """How far a batch is."""
        p = svc().progress(session_id)
        return ProgressOut(
            session_id=p.session_id,
            submitted=p.submitted,
            done=p.done,
            errors=p.errors,
            complete=p.complete,
        )

    @app.get(
        "/v1/batches/{session_id}/results",
        dependencies=guard,
        responses={
            **problems,
            200: {
                "content": {
                    "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                    "text/csv": {"schema": {"type": "string"}},
                }
            },
        },
    )
    def results(session_id: str, request: Request) -> Any:
        """One row per photo: JSON, or CSV with ``Accept: text/csv``."""
        rows = svc().results(session_id)
        if "text/csv" in request.headers.get("accept", ""):
            return Response(csv_bytes(rows), media_type="text/csv; charset=utf-8")
        return JSONResponse([r.to_dict() for r in rows])

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
    def readyz() -> Any:
        """Every backend: 200 when storage, queue and results database answer, else 503."""
        ready, checks = svc().ready()
        body = ReadyOut(
            ready=ready,
            checks=[
                CheckOut(name=h.name, ok=h.ok, detail=h.detail, figures=list(h.figures))
                for h in checks
            ],
        )
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> Any:
        """Prometheus text format: photos classified, errors, latency histogram, queue lag."""
        lag = svc().queue_lag()
        return PlainTextResponse(
            metrics.render(lag), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return app


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API with uvicorn until stopped. Without tokens it binds to 127.0.0.1 only,
    whatever ``host`` says, and says so."""
    import uvicorn

    if not settings.api_token_list and host not in LOOPBACK:
        print(
            f"no FRUITSTREAM_API_TOKENS configured: binding to 127.0.0.1, not {host}",
            file=sys.stderr,
        )
        host = "127.0.0.1"
    auth = "bearer tokens required" if settings.api_token_list else "no authentication"
    print(f"fruitstream API at http://{host}:{port} ({auth}); docs at /docs", flush=True)
    app = create_app(FruitService.create(settings))
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


async def _one_photo(request: Request, name: str, limits: ImageLimits) -> tuple[str, bytes]:
    """The photo of a classify request, refused past the byte limit before it is all read."""
    limit = limits.max_bytes
    kind = request.headers.get("content-type", "")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise ImageTooLargeError(
            f"request is {int(declared):,} bytes, over the limit of {limit:,} bytes"
        )
    if kind.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=4)
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
    return name, bytes(body)


async def _in_thread(func: Any, *args: Any) -> Any:
    """CPU-bound work off the event loop (ONNX Runtime releases the GIL)."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(func, *args)
