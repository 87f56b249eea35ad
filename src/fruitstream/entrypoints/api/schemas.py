"""The API's documents: what each route answers, as the OpenAPI schema shows them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# A file in a request body, as the OpenAPI document describes it.
BINARY = {"type": "string", "format": "binary"}
# What a label may be, as sent (the server stores it lower-cased, single-spaced).
LABEL_PATTERN = r"^[A-Za-z][A-Za-z0-9 _-]{0,38}[A-Za-z0-9]$"


class TopKOut(BaseModel):
    label: str
    confidence: float


class ClassifyOut(BaseModel):
    """Exactly the record of ``fruitstream classify --json``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "path": "banana.jpg",
                    "label": "banana",
                    "guess": "banana",
                    "confidence": 0.97,
                    "known": True,
                    "top_k": [
                        {"label": "banana", "confidence": 0.97},
                        {"label": "mango", "confidence": 0.01},
                    ],
                    "error": None,
                }
            ]
        }
    )

    path: str
    # The fruit, when the model knows it (known); null when it does not or on error.
    label: str | None
    # The model's closest fruit, known or not (null on error).
    guess: str | None
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
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "session_id": "5f0c3e1a-8d7e-4c65-9a51-0e8f9b1c2d3e",
                    "submitted": 2,
                    "queued": 1,
                    "rejected": {"empty.jpg": "empty file (0 bytes)"},
                    "photos": [
                        {
                            "filename": "kiwi.jpg",
                            "image_id": "0b9f8e7d-6c5b-4a39-8271-605f4e3d2c1b",
                            "state": "queued",
                            "reason": None,
                        },
                        {
                            "filename": "empty.jpg",
                            "image_id": "a1b2c3d4-e5f6-4789-8abc-def012345678",
                            "state": "rejected",
                            "reason": "empty file (0 bytes)",
                        },
                    ],
                }
            ]
        }
    )

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

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:fruitstream:problem:not-an-image",
                    "title": "Not an image",
                    "status": 422,
                    "detail": "not an image, or an unsupported format",
                    "request_id": "3f1e0c2b9a8d4e7f",
                }
            ]
        }
    )

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    # The request's X-Request-ID: the key to the server's log line for it.
    request_id: str | None = None


class LabelIn(BaseModel):
    """A label of a batch photo: its ``image_id`` (from the 202 or the results)."""

    image_id: str = Field(min_length=1, max_length=64)
    # A fruit's name, "not-fruit", or a new fruit's name (stored in lower case).
    label: str = Field(pattern=LABEL_PATTERN)


class LabelOut(BaseModel):
    """A person's label beside the model's answer, at the time."""

    label_id: str
    content_sha256: str
    object_key: str
    label: str
    model_label: str | None
    model_known: bool | None
    model_version: str
    source: str
    created_at: str
    image_id: str | None
