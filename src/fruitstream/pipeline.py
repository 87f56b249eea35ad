"""The batch pipeline service: submit photos (store, record, announce) and follow a session."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from fruitstream.domain import (
    ImageMessage,
    Progress,
    ResultRow,
    SessionRecord,
    new_id,
    object_key,
    utcnow,
)
from fruitstream.errors import BackendError, ImageTooLargeError, UnsupportedImageError
from fruitstream.imaging import ImageLimits
from fruitstream.ports import ObjectStore, Publisher, ResultStore, SessionStore

log = logging.getLogger(__name__)

_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


@dataclass(frozen=True)
class Upload:
    """One file handed to ``submit``: its name and bytes."""

    filename: str
    data: bytes


@dataclass
class SubmitReport:
    """What ``submit`` did: every file is queued or already has its error row."""

    session_id: str
    queued: list[str] = field(default_factory=list)
    # filename -> reason, for files recorded straight away as error rows
    rejected: dict[str, str] = field(default_factory=dict)
    # filename -> reason, for files stored but not announced on the queue
    not_sent: dict[str, str] = field(default_factory=dict)

    @property
    def submitted(self) -> int:
        return len(self.queued) + len(self.rejected) + len(self.not_sent)


def precheck(data: bytes, limits: ImageLimits) -> str | None:
    """The checks that need no decoding: they reject a file before it is stored."""
    if not data:
        return str(UnsupportedImageError("empty file (0 bytes)"))
    if len(data) > limits.max_bytes:
        return str(
            ImageTooLargeError(
                f"file is {len(data):,} bytes, over the limit of {limits.max_bytes:,} bytes"
            )
        )
    return None


class Pipeline:
    """Submits photos and reads sessions; the same code runs embedded and distributed."""

    def __init__(
        self,
        store: ObjectStore,
        publisher: Publisher,
        results: ResultStore,
        sessions: SessionStore,
        limits: ImageLimits = ImageLimits(),
        model_version: str = "",
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.results = results
        self.sessions = sessions
        self.limits = limits
        self.model_version = model_version

    def submit(self, uploads: Sequence[Upload], name: str = "") -> SubmitReport:
        """Store each photo, record the session, then announce each photo on the queue.

        A photo that fails a check, cannot be stored, or cannot be sent gets an error row at
        once, so the session always completes; the report says which and why.
        """
        now = utcnow()
        session_id = new_id()
        report = SubmitReport(session_id)
        messages: list[ImageMessage] = []
        errors: list[ResultRow] = []
        for up in uploads:
            image_id = new_id()
            key = object_key(session_id, image_id, up.filename, now)
            msg = ImageMessage(
                image_id=image_id,
                session_id=session_id,
                object_key=key,
                filename=up.filename,
                content_sha256=hashlib.sha256(up.data).hexdigest(),
                submitted_at=now,
            )
            reason = precheck(up.data, self.limits)
            if reason is None:
                try:
                    suffix = (
                        "." + up.filename.rsplit(".", 1)[-1].lower() if "." in up.filename else ""
                    )
                    self.store.put(key, up.data, _CONTENT_TYPES.get(suffix))
                except BackendError as exc:
                    reason = f"could not store the image: {exc}"
            if reason is not None:
                report.rejected[up.filename] = reason
                errors.append(self._error_row(msg, reason))
                continue
            url = self.store.url(key)
            messages.append(
                msg if url is None else ImageMessage(**{**msg.__dict__, "image_url": url})
            )
        self.sessions.add_session(SessionRecord(session_id, now, len(uploads), name))
        failed = self.publisher.publish(messages) if messages else {}
        for msg in messages:
            if msg.image_id in failed:
                reason = f"could not be queued: {failed[msg.image_id]}"
                report.not_sent[msg.filename] = reason
                errors.append(self._error_row(msg, reason))
            else:
                report.queued.append(msg.image_id)
        self.results.upsert(errors)
        if report.not_sent:
            log.warning("%d of %d photos could not be queued", len(report.not_sent), len(uploads))
        return report

    def _error_row(self, msg: ImageMessage, reason: str) -> ResultRow:
        return ResultRow.from_outcome(msg, RuntimeError(reason), self.model_version)

    def progress(self, session_id: str) -> Progress:
        return self.results.progress(session_id)

    def results_of(self, session_id: str) -> list[ResultRow]:
        self.sessions.get_session(session_id)  # NotFoundError for an unknown session
        return self.results.results(session_id)
