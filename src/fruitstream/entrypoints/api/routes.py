"""The API's routes: HTTP in, one ``FruitService`` call, a document out."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from fruitstream.domain import ImageLimits, check_size
from fruitstream.entrypoints.api.deps import authorized, get_metrics, get_service
from fruitstream.entrypoints.api.metrics import Metrics
from fruitstream.entrypoints.api.problems import PROBLEM, PROBLEM_STATUSES, TooManyFilesError
from fruitstream.entrypoints.api.schemas import (
    BatchOut,
    CheckOut,
    ClassifyOut,
    PhotoOut,
    Problem,
    ProgressOut,
    ReadyOut,
    SessionOut,
)
from fruitstream.errors import ImageError, ImageTooLargeError
from fruitstream.pipeline import OpenFile, Upload
from fruitstream.service import FileResult, FruitService
from fruitstream.stats import csv_bytes

router = APIRouter()
GUARD = [Depends(authorized)]
PROBLEM_RESPONSES: dict[int | str, dict[str, object]] = {
    code: {"model": Problem, "content": {PROBLEM: {}}} for code in PROBLEM_STATUSES
}
Service = Annotated[FruitService, Depends(get_service)]
Counters = Annotated[Metrics, Depends(get_metrics)]


@router.post(
    "/v1/classify",
    response_model=ClassifyOut,
    dependencies=GUARD,
    responses=PROBLEM_RESPONSES,
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
async def classify(
    request: Request, service: Service, metrics: Counters, name: str = "upload"
) -> ClassifyOut:
    """One photo, classified at once: a multipart ``file`` part or the raw body."""
    filename, data = await _one_photo(request, name, service.settings.limits)
    started = time.perf_counter()
    try:
        prediction = await run_in_threadpool(service.classify_one, data)
    except ImageError:
        metrics.classify(time.perf_counter() - started, ok=False)
        raise
    metrics.classify(time.perf_counter() - started, ok=True)
    return ClassifyOut.model_validate(FileResult(filename, prediction).to_dict())


@router.post(
    "/v1/batches",
    response_model=BatchOut,
    status_code=202,
    dependencies=GUARD,
    responses=PROBLEM_RESPONSES,
)
def submit(
    service: Service,
    metrics: Counters,
    files: list[UploadFile] = File(...),  # noqa: B008
    name: str = "",
) -> BatchOut:
    """Many photos through the pipeline; returns the session id to follow."""
    if len(files) > service.settings.api_max_batch_files:
        raise TooManyFilesError(
            f"{len(files)} files, over the limit of {service.settings.api_max_batch_files}"
            " per batch"
        )
    uploads = [
        Upload(f.filename or f"photo-{i}", OpenFile(f.file, f.size)) for i, f in enumerate(files)
    ]
    # Without the API's worker, batches wait for a worker or Spark job started elsewhere.
    report = service.submit(uploads, name=name, queue_only=not service.settings.api_worker)
    metrics.batch(len(uploads))
    return BatchOut(
        session_id=report.session_id,
        submitted=report.submitted,
        queued=len(report.queued),
        rejected={**report.rejected, **report.not_sent},
        photos=[
            PhotoOut(filename=p.filename, image_id=p.image_id, state=p.state, reason=p.reason)
            for p in report.photos
        ],
    )


@router.get("/v1/batches", response_model=list[SessionOut], dependencies=GUARD)
def history(service: Service, limit: int = 50) -> list[SessionOut]:
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
        for s in service.sessions(limit=max(1, min(limit, 1000)))
    ]


@router.get(
    "/v1/batches/{session_id}",
    response_model=ProgressOut,
    dependencies=GUARD,
    responses=PROBLEM_RESPONSES,
)
def progress(session_id: str, service: Service) -> ProgressOut:
    """How far a batch is."""
    p = service.progress(session_id)
    return ProgressOut(
        session_id=p.session_id,
        submitted=p.submitted,
        done=p.done,
        errors=p.errors,
        complete=p.complete,
    )


@router.get(
    "/v1/batches/{session_id}/results",
    dependencies=GUARD,
    responses={
        **PROBLEM_RESPONSES,
        200: {
            "content": {
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                "text/csv": {"schema": {"type": "string"}},
            }
        },
    },
)
def results(session_id: str, request: Request, service: Service) -> Response:
    """One row per photo: JSON, or CSV with ``Accept: text/csv``."""
    rows = service.results(session_id)
    if "text/csv" in request.headers.get("accept", ""):
        return Response(csv_bytes(rows), media_type="text/csv; charset=utf-8")
    return JSONResponse([r.to_dict() for r in rows])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
def readyz(service: Service) -> JSONResponse:
    """Every backend: 200 when storage, queue and results database answer, else 503."""
    ready, checks = service.ready()
    body = ReadyOut(
        ready=ready,
        checks=[
            CheckOut(name=h.name, ok=h.ok, detail=h.detail, figures=list(h.figures)) for h in checks
        ],
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus(service: Service, metrics: Counters) -> PlainTextResponse:
    """Prometheus text format: photos classified, errors, latency histogram, queue lag."""
    lag = service.queue_lag()
    return PlainTextResponse(
        metrics.render(lag), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


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
