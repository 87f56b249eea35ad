"""The API's documents: what each route answers, as the OpenAPI schema shows them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


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


class PhotoOut(BaseModel):
    """One file of a batch, in the order sent: ``image_id`` keys its result row."""

    filename: str
    image_id: str
    state: Literal["queued", "rejected", "not sent"]
    reason: str | None


class ResultOut(BaseModel):
    """One photo of a batch: the result row (its columns are the CSV's)."""

    image_id: str
    session_id: str
    filename: str
    object_key: str
    label: str | None
    confidence: float | None
    known: bool | None
    top_k: list[TopKOut]
    status: Literal["ok", "error"]
    error: str | None
    model_version: str
    submitted_at: str
    processed_at: str
    latency_ms: float | None


class BatchOut(BaseModel):
    session_id: str
    submitted: int
    queued: int
    # filename -> reason; a repeated name shows once: ``photos`` has every file.
    rejected: dict[str, str]
    photos: list[PhotoOut]


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
    """An RFC 9457 problem document; ``type`` is one of the kinds the README lists."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    # The request's X-Request-ID: the key to the server's log line for it.
    request_id: str | None = None
