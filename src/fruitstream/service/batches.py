"""Batches: submit and keep photos, follow a session, page its results, repair a submit,
and carry a request out once per idempotency key; every read scoped to its caller."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fruitstream.config import Settings
from fruitstream.domain import (
    OPERATOR,
    Caller,
    Prediction,
    Progress,
    ResultRow,
    SessionRecord,
    Status,
    new_id,
)
from fruitstream.errors import (
    BackendError,
    ConflictError,
    IdempotencyMismatchError,
    NotFoundError,
)
from fruitstream.pipeline import NOT_SENT, REJECTED, Pipeline, Receipt, SubmitReport, Upload
from fruitstream.ports import KeyClaim
from fruitstream.service.backends import Backends
from fruitstream.service.callbacks import check_callback
from fruitstream.service.workers import Workers


@dataclass(frozen=True)
class SessionSummary:
    session: SessionRecord
    progress: Progress


def idempotency_key(key: str, caller: Caller) -> str:
    """The key as stored: hashed with whoever sent it, so that two owners' keys never meet
    and the key itself is never kept."""
    return hashlib.sha256(f"{caller.owner}\n{key}".encode()).hexdigest()


def request_fingerprint(
    uploads: Sequence[Upload], name: str = "", callback: str | None = None
) -> str:
    """What a submit asks for, as one hash: its name, its callback and, per file in order,
    its name and the hash of its bytes (each file read once, one at a time). Two requests
    with the same fingerprint are the same request, however their bodies were framed."""
    digest = hashlib.sha256(b"fruitstream-submit-1")

    def field(value: str) -> None:  # length-prefixed: no two lists of fields run together
        raw = value.encode("utf-8", "surrogatepass")
        digest.update(len(raw).to_bytes(8, "big") + raw)

    field(name)
    field("" if callback is None else "callback:" + callback)
    for up in uploads:
        field(up.filename)
        try:
            field(hashlib.sha256(up.read()).hexdigest())
        except OSError as exc:  # the submit gives it its error row; the same for a retry
            field(f"unreadable: {exc.strerror or exc}")
    return digest.hexdigest()


_RUNNING = "a request with this Idempotency-Key is still being carried out"


class Batches:
    """The batch use cases over the configured backends."""

    def __init__(self, settings: Settings, backends: Backends, workers: Workers) -> None:
        self.settings = settings
        self.backends = backends
        self.workers = workers

    def pipeline(self) -> Pipeline:
        """Submit and read sessions over the configured backends."""
        return self.backends.pipeline()

    def submit(
        self,
        uploads: Sequence[Upload],
        name: str = "",
        queue_only: bool = False,
        callback: str | None = None,
        *,
        caller: Caller = OPERATOR,
        session_id: str | None = None,
    ) -> SubmitReport:
        """Store and queue a batch owned by ``caller`` (every photo is queued or has its
        error row), then see that something classifies it (the worker policy, unless
        ``queue_only``): ``report.classified_here`` says a worker thread of this process
        does, and the caller then waits, or stops the service, before it exits.
        ``session_id``: the batch's id, made beforehand (``once`` records it first)."""
        if callback is not None:  # refused before anything is stored
            check_callback(callback, *self.workers.callback_config())
        report = self.pipeline().submit(
            uploads, name=name, owner=caller.owner, session_id=session_id
        )
        if callback is not None:
            self.backends.db.add_callback(report.session_id, callback)
        report.classified_here = self.workers.needed(queue_only)
        return report

    def keep(
        self, filename: str, data: bytes, prediction: Prediction, *, caller: Caller = OPERATOR
    ) -> str:
        """A photo classified at once, kept in the caller's history as a finished one-photo
        session named after the file; returns its session id."""
        return self.pipeline().keep(filename, data, prediction, name=filename, owner=caller.owner)

    def session(self, session_id: str, *, caller: Caller = OPERATOR) -> SessionRecord:
        """``NotFoundError`` for an unknown session, or one another owner's."""
        found = self.backends.db.get_session(session_id)
        if not caller.sees(found.owner):
            raise NotFoundError(f"no session {session_id!r}")  # as if it did not exist
        return found

    def once(
        self,
        key: str,
        work: Callable[[str], str],
        *,
        fingerprint: str = "",
        recover: Callable[[SubmitReport], str] | None = None,
        caller: Caller = OPERATOR,
    ) -> tuple[str, bool]:
        """Carry a submit out once per ``key`` of ``caller`` (an idempotency key).

        The first call claims the key with the request's ``fingerprint`` (see
        ``request_fingerprint``), records the id of the batch it makes, then runs
        ``work(session_id)``, which submits under that id, and records the answer it returns;
        a repeat gets that answer and True. The same key with another fingerprint is an
        ``IdempotencyMismatchError``. While the first runs, ``ConflictError``; should it fail
        before its batch is recorded, the key is free again.

        A claim whose request died (the process was killed) is taken over: once its batch's
        submit made no progress for ``stalled_submit_seconds`` (the rule ``repair`` finishes
        a submit by) the batch is repaired and answered as it now stands, ``recover(report)``,
        with True; a claim that recorded no batch that long ago stored nothing, and its
        request is carried out again.
        """
        db = self.backends.db
        scoped = idempotency_key(key, caller)
        found = db.claim(scoped, fingerprint)
        if found is not None:
            if found.fingerprint and fingerprint and found.fingerprint != fingerprint:
                raise IdempotencyMismatchError(
                    "this Idempotency-Key was used with another request (other files, name or "
                    "callback); use a new key for a new batch"
                )
            if found.answer is not None:
                return found.answer, True
            answer = self._take_over(scoped, found, recover)
            if answer is not None:
                return answer, True
            if db.claim(scoped, fingerprint) is not None:  # taken over, by another retry
                raise ConflictError(_RUNNING)
        session_id = new_id()
        db.bind(scoped, session_id)  # before any photo is stored
        try:
            answer = work(session_id)
        except BaseException:
            if not self._recorded(session_id):
                db.release(scoped)
            # else the batch exists: repair finishes it, and a retry is answered with it
            raise
        db.settle(scoped, answer)
        return answer, False

    def _take_over(
        self, scoped: str, found: KeyClaim, recover: Callable[[SubmitReport], str] | None
    ) -> str | None:
        """The answer to a retry of an unsettled claim whose request died; None when the key
        was freed for this retry to run its request; ``ConflictError`` while it runs."""
        db = self.backends.db
        wait = self.settings.stalled_submit_seconds
        old = datetime.now(UTC) - found.claimed_at >= timedelta(seconds=wait)
        sid = found.session_id
        if sid is None or not self._recorded(sid):
            if not old:  # still on its way to recording its batch
                raise ConflictError(_RUNNING)
            db.release(scoped, claimed_before=found.claimed_at)  # nothing was stored
            return None
        if recover is None:
            raise ConflictError(_RUNNING)
        if sid in db.stalled(wait):
            self.repair()  # the one entrance: finishes this submit (and any other stalled)
        elif sid in db.stalled(0) or not old:
            raise ConflictError(_RUNNING)  # its submit moves, or it is about to settle
        answer = recover(self.report_of(sid))
        db.settle(scoped, answer)
        return answer

    def _recorded(self, session_id: str) -> bool:
        """Whether the batch exists (its photo list is written); True when the database
        cannot say, so that nothing is freed that may be in use."""
        try:
            self.backends.db.get_session(session_id)
        except NotFoundError:
            return False
        except BackendError:
            return True
        return True

    def report_of(self, session_id: str) -> SubmitReport:
        """A batch's submit report as it stands, from its photo list and rows: a photo with
        an error row is rejected (not sent, when it could not be queued) with its reason,
        any other queued."""
        rows = {r.image_id: r for r in self.backends.db.results(session_id)}
        report = SubmitReport(session_id)
        for msg in self.backends.db.photo_list(session_id):
            row = rows.get(msg.image_id)
            if row is None or row.status != Status.ERROR:
                report.photos.append(Receipt(msg.filename, msg.image_id))
            else:
                why = row.error or ""
                state = NOT_SENT if why.startswith("could not be queued") else REJECTED
                report.photos.append(Receipt(msg.filename, msg.image_id, state, why))
        return report

    def progress(self, session_id: str, *, caller: Caller = OPERATOR) -> Progress:
        """``NotFoundError`` for an unknown session."""
        self.session(session_id, caller=caller)
        return self.backends.db.progress(session_id)

    def results(
        self,
        session_id: str,
        limit: int | None = None,
        after: str | None = None,
        *,
        caller: Caller = OPERATOR,
    ) -> list[ResultRow]:
        """The session's rows in file name order; a page of ``limit`` after the row whose
        image id is ``after``."""
        self.session(session_id, caller=caller)
        return self.pipeline().results_of(session_id, limit, after)

    def results_page(
        self,
        session_id: str,
        limit: int | None = None,
        after: str | None = None,
        *,
        caller: Caller = OPERATOR,
    ) -> tuple[list[ResultRow], Progress]:
        """A page of the session's rows and how far the session is, the session looked up
        once (``NotFoundError`` for an unknown or another owner's session)."""
        self.session(session_id, caller=caller)
        progress = self.backends.db.progress(session_id)
        return self.backends.db.results(session_id, limit, after), progress

    def sessions(
        self, limit: int = 50, before: str | None = None, *, caller: Caller = OPERATOR
    ) -> list[SessionSummary]:
        """The caller's sessions, newest first; a page of ``limit`` after ``before``."""
        db = self.backends.db
        if before is not None:
            self.session(before, caller=caller)
        found = db.sessions(limit=limit, before=before, owner=caller.scope)
        return [SessionSummary(s, db.progress(s.session_id)) for s in found]

    def wait(
        self,
        session_id: str,
        timeout: float | None = None,
        poll: float = 0.2,
        on_progress: Callable[[Progress], None] | None = None,
        on_no_worker: Callable[[], None] | None = None,
        queue_only: bool = False,
        *,
        caller: Caller = OPERATOR,
    ) -> Progress:
        """Poll until the session is complete or ``timeout`` seconds pass; the last progress.

        About once a second it checks that a worker is alive. Should none be, the worker
        policy starts one here (the embedded queue, not ``queue_only``); else ``on_no_worker``
        is told (once), since only the user can start one (``fruitstream worker`` or the
        Spark job).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_check = time.monotonic()
        told = False
        while True:
            progress = self.progress(session_id, caller=caller)
            if on_progress is not None:
                on_progress(progress)
            if progress.complete or (deadline is not None and time.monotonic() >= deadline):
                return progress
            if time.monotonic() - last_check >= 1.0 and not self.workers.alive():
                last_check = time.monotonic()
                if not queue_only and self.workers.can_classify_here():
                    self.workers.ensure()
                elif not told and on_no_worker is not None:
                    told = True
                    on_no_worker()
            time.sleep(poll)

    def photo(self, object_key: str) -> bytes:
        """The stored photo of a result row (``NotFoundError`` when it is gone)."""
        return self.backends.store.get(object_key)

    def repair(self, older_than: float | None = None) -> dict[str, int]:
        """Finish the submits that stopped half way (older than the configured time unless
        said): the one entrance, for ``fruitstream repair`` and every worker's chores."""
        return self.backends.repair(older_than)
