"""The batch pipeline service: submit photos (store, record, announce) and follow a session."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

from fruitstream.dataset import CONTENT_TYPES
from fruitstream.domain import (
    ImageLimits,
    ImageMessage,
    Prediction,
    Progress,
    ResultRow,
    SessionRecord,
    check_size,
    error_row,
    new_id,
    object_key,
    utcnow,
)
from fruitstream.errors import (
    BackendError,
    ImageError,
    NotFoundError,
    StorageError,
)
from fruitstream.ports import ObjectStore, Publisher, ResultStore, SessionLog

log = logging.getLogger(__name__)


class Source(Protocol):
    """Bytes that can say their size before they are read (an uploaded part on disk)."""

    def size(self) -> int: ...
    def read(self) -> bytes: ...


class BinaryFile(Protocol):
    def seek(self, offset: int, whence: int = 0, /) -> int: ...
    def tell(self) -> int: ...
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class OpenFile:
    """An upload still in its open file (an HTTP part spooled to disk, a file given to the
    app): a ``Source`` of ``Upload`` for every entrypoint, read when its turn comes."""

    file: BinaryFile
    known_size: int | None = None

    def size(self) -> int:
        if self.known_size is not None:
            return self.known_size
        self.file.seek(0, 2)
        size = self.file.tell()
        self.file.seek(0)
        return size

    def read(self) -> bytes:
        self.file.seek(0)
        return self.file.read()


@dataclass(frozen=True)
class Upload:
    """One file handed to ``submit``: its name and its bytes, or where to read them from.

    A path (or another source) is read only when its turn comes, so that a folder of large
    photos never sits in memory at once.
    """

    filename: str
    data: bytes | Path | Source
    # Why the entrypoint already refused it (an HTTP part without a file name, a name too
    # long): it is an entry of the batch, rejected with this reason, and never read.
    refused: str | None = None

    def size(self) -> int:
        if isinstance(self.data, bytes):
            return len(self.data)
        if isinstance(self.data, Path):
            return self.data.stat().st_size
        return self.data.size()

    def read(self) -> bytes:
        if isinstance(self.data, bytes):
            return self.data
        if isinstance(self.data, Path):
            return self.data.read_bytes()
        return self.data.read()


# What became of one file of a submit.
ReceiptState = Literal["queued", "rejected", "not sent"]
QUEUED: ReceiptState = "queued"
REJECTED: ReceiptState = "rejected"
NOT_SENT: ReceiptState = "not sent"


@dataclass(frozen=True)
class Receipt:
    """One file of a submit, in the order given: its image id (the key of its result row)
    and whether it was queued, rejected at once (checked, read or stored), or stored but not
    announced; a reason for the last two, which already have their error rows."""

    filename: str
    image_id: str
    state: ReceiptState = QUEUED
    reason: str | None = None


@dataclass
class SubmitReport:
    """What ``submit`` did: every file is queued or already has its error row."""

    session_id: str
    photos: list[Receipt] = field(default_factory=list)
    # Whether a worker thread of the submitting process was started to classify it.
    classified_here: bool = False

    @property
    def submitted(self) -> int:
        return len(self.photos)

    @property
    def queued(self) -> list[str]:
        return [p.image_id for p in self.photos if p.state == QUEUED]

    @property
    def rejected(self) -> dict[str, str]:
        """``filename -> reason`` of files rejected at once (a repeated name shows once:
        ``photos`` has each file)."""
        return {p.filename: p.reason or "" for p in self.photos if p.state == REJECTED}

    @property
    def not_sent(self) -> dict[str, str]:
        """``filename -> reason`` of files stored but not announced on the queue."""
        return {p.filename: p.reason or "" for p in self.photos if p.state == NOT_SENT}


def precheck(size: int, limits: ImageLimits) -> str | None:
    """The checks that need no decoding: why a file is refused before it is read or stored."""
    try:
        check_size(size, limits)
    except ImageError as exc:
        return str(exc)
    return None


# Photos stored between two queue sends (and progress notes in the submit log).
SUBMIT_CHUNK = 32
# A submit that has not moved for this long is taken to be dead, and ``repair`` finishes it.
STALLED_SECONDS = 60.0


class Pipeline:
    """Submits photos and reads sessions; the same code runs embedded and distributed."""

    def __init__(
        self,
        store: ObjectStore,
        publisher: Publisher,
        results: ResultStore,
        sessions: SessionLog,
        limits: ImageLimits = ImageLimits(),
        model_version: str = "",
        failpoint: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.results = results
        self.sessions = sessions
        self.limits = limits
        self.model_version = model_version
        # Called at each step of ``submit`` by name: the fault tests kill the process there.
        self._failpoint = failpoint or (lambda _step: None)

    def submit(
        self,
        uploads: Sequence[Upload],
        name: str = "",
        owner: str = "",
        session_id: str | None = None,
    ) -> SubmitReport:
        """Record the session and its photo list, then store and announce photo by photo.
        ``session_id``: the batch's id, when the caller made it beforehand (to record it
        elsewhere first, as an idempotency claim does); a new one otherwise.

        The order makes every session converge, whatever stops the submitter: the photo list
        is written first (one transaction), a photo is marked queued once announced, and
        ``repair`` finishes the photos of a submit that died in between. A photo that fails a
        check, cannot be stored, or cannot be sent gets its error row at once. An object
        store that does not answer at all is a ``StorageError`` before anything is recorded.
        """
        health = self.store.health()
        if not health.ok:
            raise StorageError(f"nothing submitted: the object store is down ({health.detail})")
        now = utcnow()
        session_id = session_id or new_id()
        report = SubmitReport(session_id)
        planned = []
        for up in uploads:
            image_id = new_id()
            msg = ImageMessage(
                image_id=image_id,
                session_id=session_id,
                object_key=object_key(session_id, image_id, up.filename, now),
                filename=up.filename,
                content_sha256="",
                submitted_at=now,
            )
            planned.append((up, msg))
        # In the order given; each entry is replaced when its file is rejected or not sent.
        receipts = {m.image_id: Receipt(u.filename, m.image_id) for u, m in planned}
        self.sessions.add_session(
            SessionRecord(session_id, now, len(uploads), name[:200], owner),
            [m for _, m in planned],
        )
        self._failpoint("session-recorded")
        for start in range(0, len(planned), SUBMIT_CHUNK):
            chunk = planned[start : start + SUBMIT_CHUNK]
            messages, errors = self._store_chunk(chunk, receipts)
            self._failpoint("chunk-stored")
            failed = self.publisher.publish(messages) if messages else {}
            self._failpoint("chunk-published")
            for msg in messages:
                if msg.image_id in failed:
                    reason = f"could not be queued: {failed[msg.image_id]}"
                    receipts[msg.image_id] = Receipt(msg.filename, msg.image_id, NOT_SENT, reason)
                    errors.append(error_row(msg, reason, self.model_version))
            self.results.upsert(errors)
            last = start + SUBMIT_CHUNK >= len(planned)
            self.sessions.mark_queued(session_id, [m.image_id for _, m in chunk], finished=last)
        report.photos = list(receipts.values())
        if report.not_sent:
            log.warning("%d of %d photos could not be queued", len(report.not_sent), len(uploads))
        return report

    def keep(
        self, filename: str, data: bytes, prediction: Prediction, name: str = "", owner: str = ""
    ) -> str:
        """A photo classified in process, kept as a finished one-photo session (the app's
        history of single photos): the photo stored, its session recorded, its row written.
        Returns the session id; a backend that fails is its ``BackendError``."""
        now = utcnow()
        session_id, image_id = new_id(), new_id()
        msg = ImageMessage(
            image_id=image_id,
            session_id=session_id,
            object_key=object_key(session_id, image_id, filename, now),
            filename=filename,
            content_sha256=hashlib.sha256(data).hexdigest(),
            submitted_at=now,
        )
        self.store.put(msg.object_key, data, content_type(filename))
        self.sessions.add_session(SessionRecord(session_id, now, 1, name[:200], owner), [msg])
        self.results.upsert([ResultRow.from_outcome(msg, prediction, self.model_version)])
        self.sessions.mark_queued(session_id, [image_id], finished=True)
        return session_id

    def _store_chunk(
        self, chunk: Sequence[tuple[Upload, ImageMessage]], receipts: dict[str, Receipt]
    ) -> tuple[list[ImageMessage], list[ResultRow]]:
        """Check, read and store each photo of ``chunk``; one at a time in memory."""
        messages: list[ImageMessage] = []
        errors: list[ResultRow] = []
        for up, msg in chunk:
            try:
                reason = up.refused or precheck(up.size(), self.limits)
                if reason is None:
                    data = up.read()
                    reason = precheck(len(data), self.limits)  # it may have changed since
            except OSError as exc:
                reason = f"cannot read file: {exc.strerror or exc}"
            if reason is None:
                msg = replace(msg, content_sha256=hashlib.sha256(data).hexdigest())
                try:
                    self.store.put(msg.object_key, data, content_type(up.filename))
                except BackendError as exc:
                    reason = f"could not store the image: {exc}"
                del data
            if reason is not None:
                receipts[msg.image_id] = Receipt(up.filename, msg.image_id, REJECTED, reason)
                errors.append(error_row(msg, reason, self.model_version))
            else:
                messages.append(msg)
        return messages, errors

    def repair(self, older_than: float = STALLED_SECONDS) -> dict[str, int]:
        """Finish the submits that stopped half way: a photo that reached the store is queued
        now, one that did not gets its error row. Returns photos settled per session."""
        settled: dict[str, int] = {}
        for session_id, photos in self.sessions.stalled(older_than).items():
            messages, errors = [], []
            for msg in photos:
                try:
                    data = self.store.get(msg.object_key)
                except NotFoundError:
                    reason = "the submit was interrupted before this photo was stored"
                    errors.append(error_row(msg, reason, self.model_version))
                    continue
                messages.append(replace(msg, content_sha256=hashlib.sha256(data).hexdigest()))
            failed = self.publisher.publish(messages) if messages else {}
            errors += [
                error_row(m, f"could not be queued: {failed[m.image_id]}", self.model_version)
                for m in messages
                if m.image_id in failed
            ]
            self.results.upsert(errors)
            self.sessions.mark_queued(session_id, [m.image_id for m in photos], finished=True)
            settled[session_id] = len(photos)
            log.warning("repaired session %s: %d photos settled", session_id, len(photos))
        return settled

    def progress(self, session_id: str) -> Progress:
        return self.results.progress(session_id)

    def results_of(
        self, session_id: str, limit: int | None = None, after: str | None = None
    ) -> list[ResultRow]:
        self.sessions.get_session(session_id)  # NotFoundError for an unknown session
        return self.results.results(session_id, limit, after)


def content_type(filename: str) -> str | None:
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return CONTENT_TYPES.get(suffix)
