"""The pipeline's ports: small protocols that each backend adapter implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from fruitstream.domain import (
    ImageLimits,
    ImageMessage,
    Label,
    ModelVersion,
    Prediction,
    Progress,
    ResultRow,
    SessionRecord,
)
from fruitstream.model.bundle import ModelBundle

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


@dataclass(frozen=True)
class Health:
    """One backend's state for ``fruitstream status`` and the UI sidebar."""

    name: str
    ok: bool
    detail: str
    extra: dict[str, Any] | None = None
    # Ready-made lines to show under it ("lag 12 messages"): no entrypoint knows the keys.
    figures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Delivery:
    """A message taken from the queue: the raw bytes and the handle to acknowledge it."""

    raw: bytes
    handle: Any
    attempts: int = 1
    # Why the previous attempt failed, when it said (kept for the final error row).
    last_error: str | None = None


@dataclass(frozen=True)
class KeyClaim:
    """An idempotency key already claimed: by whom (the request's fingerprint), when, the
    batch its request made (recorded before any photo is stored) and, once settled, its
    answer."""

    fingerprint: str  # "" when not recorded (a claim of an older release)
    claimed_at: datetime
    session_id: str | None = None
    answer: str | None = None  # None while its request has not settled


class PhotoClassifier(Protocol):
    """What the service and the workers need of the classifier core (``core.Classifier``):
    one photo or many, each outcome a prediction or the reason it has none."""

    @property
    def bundle(self) -> ModelBundle: ...
    @property
    def limits(self) -> ImageLimits: ...
    def classify(self, data: bytes, top_k: int = 3) -> Prediction: ...
    def classify_many(
        self, images: Sequence[bytes], top_k: int = 3
    ) -> Sequence[Prediction | Exception]: ...
    def warm_up_lanes(self) -> None: ...
    def use(self, bundle: ModelBundle) -> None:
        """Answer with another version of the same graphs from the next photo on."""
        ...

    def embed(self, images: Sequence[bytes]) -> Sequence[NDArray[np.float32] | Exception]:
        """The pooled features of each photo (what an adapted last layer reads)."""
        ...

    def embed_views(
        self, images: Sequence[bytes], views: int | Sequence[str]
    ) -> Sequence[NDArray[np.float32] | Exception]:
        """Per photo, its pooled features and its first ``views`` teaching views' (rows), or
        those of the views it names."""
        ...

    @property
    def embed_width(self) -> int: ...


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str | None = None) -> None: ...
    def get(self, key: str) -> bytes: ...
    def health(self) -> Health: ...


class Publisher(Protocol):
    def publish(self, messages: Sequence[ImageMessage]) -> dict[str, str]:
        """Send every message; returns ``image_id -> reason`` for those that could not be sent."""
        ...

    def health(self) -> Health: ...


class Consumer(Protocol):
    def take(self, max_messages: int, timeout: float) -> list[Delivery]: ...
    def ack(self, deliveries: Sequence[Delivery]) -> None: ...
    def extend(
        self, deliveries: Sequence[Delivery], seconds: float, reason: str | None = None
    ) -> None:
        """Keep ``deliveries`` leased ``seconds`` from now: to go on working on them, or
        (with the ``reason`` they failed) to hand them back for a later attempt."""
        ...


class ResultStore(Protocol):
    def upsert(self, rows: Sequence[ResultRow]) -> None: ...
    def result(self, image_id: str) -> ResultRow:
        """One photo's row (``NotFoundError`` when it has none)."""
        ...

    def results(
        self, session_id: str, limit: int | None = None, after: str | None = None
    ) -> list[ResultRow]:
        """In file name order (then image id); ``after``: the image id of the last row of
        the previous page (``CursorError`` when it is not one of the session's)."""
        ...

    def progress(self, session_id: str) -> Progress: ...


class SessionStore(Protocol):
    def add_session(self, session: SessionRecord, photos: Sequence[ImageMessage] = ()) -> None: ...
    def get_session(self, session_id: str) -> SessionRecord: ...
    def sessions(
        self, limit: int = 50, before: str | None = None, owner: str | None = None
    ) -> list[SessionRecord]:
        """Newest first; ``before``: the id of the last session of the previous page;
        ``owner``: only the sessions it submitted (None: every one)."""
        ...


class SubmitLog(Protocol):
    """What a submit has done so far, so that a crashed one can be finished by another."""

    def mark_queued(self, session_id: str, image_ids: Sequence[str], finished: bool) -> None: ...
    def stalled(self, older_than: float) -> dict[str, list[ImageMessage]]: ...
    def photo_list(self, session_id: str) -> list[ImageMessage]:
        """A session's photo list in the order submitted (no content hash: the bytes are in
        the store); empty for an unknown session."""
        ...


class SessionLog(SessionStore, SubmitLog, Protocol):
    """The sessions and the submit log: one database in every set-up."""


class Heartbeats(Protocol):
    def beat(self, worker_id: str, kind: str, info: dict[str, Any]) -> None: ...
    def latest(self) -> list[tuple[str, str, datetime, dict[str, Any]]]: ...


class IdempotencyKeys(Protocol):
    """Answers recorded by key, so that a request sent twice is carried out once."""

    def claim(self, key: str, fingerprint: str = "") -> KeyClaim | None:
        """Reserve ``key`` for the request ``fingerprint`` names: None when it is new (carry
        the request out, then ``settle``), else the claim as it stands."""
        ...

    def bind(self, key: str, session_id: str) -> None:
        """Record the batch an unsettled claim's request makes, before it stores anything."""
        ...

    def settle(self, key: str, answer: str) -> None: ...
    def release(self, key: str, claimed_before: datetime | None = None) -> None:
        """The first request failed: the key is free for the next attempt (unsettled claims
        only; with ``claimed_before``, only one claimed at or before it, so that of two
        retries taking a dead claim over, one wins)."""
        ...


class Callbacks(Protocol):
    """Completion callbacks of batches, until each is delivered once (or given up)."""

    def add_callback(self, session_id: str, url: str) -> None: ...
    def due_callbacks(self, now: datetime) -> list[tuple[str, str, int]]:
        """``(session_id, url, attempts so far)`` of undelivered callbacks due by ``now``."""
        ...

    def settle_callback(self, session_id: str, retry_at: datetime | None) -> None:
        """One more attempt made: done (``retry_at`` None), or the next one at ``retry_at``."""
        ...


class LabelStore(Protocol):
    """People's labels of photos, with their history."""

    def add_label(self, label: Label) -> None: ...
    def labels(self, limit: int = 50, before: str | None = None) -> list[Label]:
        """The current label of each photo, newest first; ``before``: the last label id of
        the previous page."""
        ...

    def remove_label(self, label_id: str) -> Label:
        """Take a label back (the photo's previous one, if any, is current again)."""
        ...


class ModelVersions(Protocol):
    """The versions ``adapt`` made, and which one is live: shared by every process."""

    def add_version(self, version: ModelVersion) -> None: ...
    def versions(self) -> list[ModelVersion]:
        """Every adapted version, newest first."""
        ...

    def activate(self, version: str) -> None:
        """Make ``version`` (``base``: the shipped model) the live one from now on."""
        ...

    def active_version(self) -> str:
        """The live version (``base`` when none was ever activated)."""
        ...


class ResultsDatabase(
    ResultStore,
    SessionStore,
    SubmitLog,
    Heartbeats,
    IdempotencyKeys,
    Callbacks,
    LabelStore,
    ModelVersions,
    Protocol,
):
    """Results, sessions, the submit log and heartbeats: one database in every set-up."""

    def health(self) -> Health: ...
