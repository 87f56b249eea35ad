"""The API's documents: what each route answers, as the OpenAPI schema shows them.

A document that sends a record (a result row, a label, a batch's progress...) takes its
fields from the record's dataclass (``mirrors``): one list of names, in the record's order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from fruitstream.domain import Label, Progress, ResultRow, SessionRecord, TopK
from fruitstream.pipeline import Receipt
from fruitstream.ports import Health

# A file in a request body, as the OpenAPI document describes it.
BINARY = {"type": "string", "format": "binary"}
# What a label may be, as sent (the server stores it lower-cased, single-spaced).
LABEL_PATTERN = r"^[A-Za-z][A-Za-z0-9 _-]{0,38}[A-Za-z0-9]$"

_Model = TypeVar("_Model", bound=BaseModel)


def _as_sent(kind: Any) -> Any:
    """A record field's type as its JSON carries it: a timestamp as ISO text (``to_dict``),
    an enumeration as its values, a tuple as a list."""
    if kind is datetime:
        return str
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        return Literal.__getitem__(tuple(member.value for member in kind))
    if get_origin(kind) is tuple:
        return list[get_args(kind)[0]]  # type: ignore[misc]
    return kind


def mirrors(
    record: type[Any],
    names: Sequence[str] | None = None,
    properties: Sequence[str] = (),
    types: Mapping[str, Any] | None = None,
) -> Callable[[type[_Model]], type[_Model]]:
    """Give the decorated model a required field per field of the dataclass ``record`` (the
    ``names`` only, in that order, when given), then per read-only property in ``properties``
    (typed by its return), after the model's own: each typed as sent (``_as_sent``) unless
    ``types`` says otherwise. The model keeps its name, module and docstring. A type checker
    sees the declared class only, without these fields: build one with ``model_validate``."""
    hints = get_type_hints(record)
    chosen = [f.name for f in dataclasses.fields(record)] if names is None else list(names)
    kinds = {name: _as_sent(hints[name]) for name in chosen}
    for name in properties:
        kinds[name] = get_type_hints(getattr(record, name).fget)["return"]
    kinds.update(types or {})

    def derive(model: type[_Model]) -> type[_Model]:
        required: dict[str, Any] = {name: (kind, ...) for name, kind in kinds.items()}
        return create_model(
            model.__name__,
            __base__=model,
            __module__=model.__module__,
            __doc__=model.__doc__,
            **required,
        )

    return derive


@mirrors(TopK)
class TopKOut(BaseModel):
    pass


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


@mirrors(Receipt)
class PhotoOut(BaseModel):
    """One file of a batch, in the order sent: ``image_id`` keys its result row."""


@mirrors(ResultRow, types={"top_k": list[TopKOut]})
class ResultOut(BaseModel):
    """One photo of a batch: the result row (its columns are the CSV's)."""


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


@mirrors(Progress, properties=["complete"])
class ProgressOut(BaseModel):
    pass


@mirrors(SessionRecord, names=["name", "created_at"])
class SessionOut(ProgressOut):
    pass


@mirrors(Health, names=["name", "ok", "detail", "figures"])
class CheckOut(BaseModel):
    pass


class ReadyOut(BaseModel):
    ready: bool
    checks: list[CheckOut]


class Problem(BaseModel):
    """An RFC 9457 problem document; ``type`` is one of the kinds docs/HTTP_API.md lists."""

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

    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not ignored

    image_id: str = Field(min_length=1, max_length=64)
    # A fruit's name, "not-fruit", or a new fruit's name (stored in lower case).
    label: str = Field(pattern=LABEL_PATTERN)


@mirrors(Label)
class LabelOut(BaseModel):
    """A person's label beside the model's answer, at the time."""
