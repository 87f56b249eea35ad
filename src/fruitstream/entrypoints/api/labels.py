"""The API's label routes: say what a photo shows, list the labels, take one back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from fruitstream.entrypoints.api.deps import GUARD, Service
from fruitstream.entrypoints.api.media import PAGE_HEADERS, is_json, media_type, next_page
from fruitstream.entrypoints.api.problems import (
    GUARDED,
    UnsupportedMediaTypeError,
    problem_responses,
)
from fruitstream.entrypoints.api.schemas import BINARY, LABEL_PATTERN, LabelIn, LabelOut

labels_router = APIRouter(tags=["labels"])


@labels_router.post(
    "/v1/labels",
    status_code=201,
    response_model=LabelOut,
    dependencies=GUARD,
    responses=problem_responses(*GUARDED, 400, 404, 415, 422, 503),
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/LabelIn"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": BINARY,
                            "label": {"type": "string", "pattern": LABEL_PATTERN},
                        },
                        "required": ["file", "label"],
                        "additionalProperties": False,
                    }
                },
            },
            "required": True,
        }
    },
)
async def add_label(request: Request, service: Service) -> LabelOut:
    """Say what a photo shows: a batch photo by ``image_id`` (JSON), or a photo sent with its
    label (multipart ``file`` + ``label``). A fruit, ``not-fruit``, or a new fruit's name;
    a confirmation is a label too."""
    kind = request.headers.get("content-type", "")
    if is_json(kind):
        try:
            given = LabelIn.model_validate_json(await request.body())
        except ValueError as exc:
            raise RequestValidationError([{"loc": ("body",), "msg": str(exc)[:300]}]) from exc
        made = await run_in_threadpool(
            lambda: service.label(given.label, image_id=given.image_id, source="api")
        )
    elif media_type(kind) == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=2)
        try:
            unknown = sorted(set(form.keys()) - {"file", "label"})
            if unknown:
                where = {"loc": ("body", unknown[0]), "msg": "unknown form field"}
                raise RequestValidationError([where])
            part, text = form.get("file"), form.get("label")
            if not isinstance(part, UploadFile) or not isinstance(text, str):
                where = {"loc": ("body",), "msg": "a 'file' part and a 'label' field"}
                raise RequestValidationError([where])
            data = await part.read()
            made = await run_in_threadpool(
                lambda: service.label(text, data=data, source="api", filename=part.filename or "")
            )
        finally:
            await form.close()
    else:
        raise UnsupportedMediaTypeError(f"a label is JSON or multipart/form-data, not {kind}")
    return LabelOut.model_validate(made.to_dict())


@labels_router.get(
    "/v1/labels",
    response_model=list[LabelOut],
    dependencies=GUARD,
    responses={
        **problem_responses(*GUARDED, 404, 422, 503),
        200: {"description": "a page", "headers": PAGE_HEADERS},
    },
)
def list_labels(
    request: Request,
    response: Response,
    service: Service,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> list[LabelOut]:
    """Each labelled photo's current label, newest first; the next page is at ``cursor`` =
    the ``X-Next-Cursor`` of this one."""
    page = service.labels(limit=limit, before=cursor or None)
    if len(page) == limit:
        response.headers.update(next_page(request, page[-1].label_id))
    return [LabelOut.model_validate(x.to_dict()) for x in page]


@labels_router.delete(
    "/v1/labels/{label_id}",
    status_code=204,
    response_class=Response,
    dependencies=GUARD,
    responses=problem_responses(*GUARDED, 404, 503),
)
def remove_label(label_id: str, service: Service) -> Response:
    """Take a label back; the photo's previous label, if any, is current again."""
    service.unlabel(label_id)
    return Response(status_code=204)
