"""Batches: submit and keep photos, follow a session, page its results, repair a submit,
and carry a request out once per idempotency key; every read scoped to its caller."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fruitstream.config import Settings
from fruitstream.domain import OPERATOR, Caller, Prediction, Progress, ResultRow, SessionRecord
from fruitstream.errors import ConflictError, NotFoundError
from fruitstream.pipeline import Pipeline, SubmitReport, Upload
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
    ) -> SubmitReport:
        """Store and queue a batch owned by ``caller`` (every photo is queued or has its
        error row), then see that something classifies it (the worker policy, unless
        ``queue_only``): ``report.classified_here`` says a worker thread of this process
        does, and the caller then waits, or stops the service, before it exits."""
        if callback is not None:  # refused before anything is stored
            check_callback(callback, *self.workers.callback_config())
        report = self.pipeline().submit(uploads, name=name, owner=caller.owner)
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
        self, key: str, work: Callable[[], str], *, caller: Caller = OPERATOR
    ) -> tuple[str, bool]:
        """Carry ``work`` out once per ``key`` of ``caller`` (an idempotency key): the first
        call runs it and records the answer it returns; a repeat gets that answer and True.
        ``ConflictError`` while the first is still running; should it fail, the key is free
        again."""
        db = self.backends.db
        scoped = idempotency_key(key, caller)
        known = db.claim(scoped)
        if known == "":
            raise ConflictError("a request with this Idempotency-Key is still being carried out")
        if known is not None:
            return known, True
        try:
            answer = work()
        except BaseException:
            db.release(scoped)
            raise
        db.settle(scoped, answer)
        return answer, False

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
