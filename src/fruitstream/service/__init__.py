"""The application service: every use case of fruitstream, the one thing entrypoints call.

The CLI, the Streamlit app, the HTTP API and the Spark job only translate input and output;
what happens (classify a photo, submit a batch and see that something classifies it, follow
it, repair it, report health) is written here once, against the ports. See
docs/ARCHITECTURE.md for the layers.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fruitstream import __version__
from fruitstream.bootstrap import Backends, build_backends, build_classifier
from fruitstream.service.callbacks import CallbackSender, check_callback
from fruitstream.config import Settings, load_settings
from fruitstream.dataset import expand_paths
from fruitstream.domain import (
    Label,
    ModelVersion,
    Prediction,
    Progress,
    ResultRow,
    SessionRecord,
    check_size,
)
from fruitstream.errors import (
    ConfigError,
    ConflictError,
    FruitstreamError,
    ImageTooLargeError,
    LabelError,
    NotFoundError,
    ResultStoreError,
)
from fruitstream.service.health import backends_health, is_ready, live_workers, model_health, owner_is_dead
from fruitstream.service.health import queue_lag as lag_of
from fruitstream.housekeeping import HOUSEKEEPING_SECONDS, Housekeeping, worker_id
from fruitstream.service.labels import TeachReport, label_of_photo, label_of_row, teach
from fruitstream.pipeline import Pipeline, SubmitReport, Upload
from fruitstream.ports import Delivery, Health, PhotoClassifier
from fruitstream.service.versions import AdaptReport, Versions
from fruitstream.worker import BatchOutcome, Worker, WorkerStats, process_batch

log = logging.getLogger(__name__)


class _Bar(Protocol):
    total: float | None

    def update(self, n: float | None = ...) -> bool | None: ...
    def refresh(self) -> None: ...


@dataclass(frozen=True)
class FileResult:
    """One file classified in process: ``classify --json`` and ``POST /v1/classify``."""

    path: str
    prediction: Prediction | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Always seven keys: path, label, guess, confidence, known, top_k, error. ``label``
        is the fruit only when the model knows it (``known``); ``guess`` is always its closest
        fruit, so that "not sure" never reads as an answer."""
        if self.prediction is not None:
            p = self.prediction.to_dict()
            return {
                "path": self.path,
                "label": p["label"] if p["known"] else None,
                "guess": p["label"],
                "confidence": p["confidence"],
                "known": p["known"],
                "top_k": p["top_k"],
                "error": None,
            }
        return {
            "path": self.path,
            "label": None,
            "guess": None,
            "confidence": None,
            "known": None,
            "top_k": [],
            "error": self.error,
        }


def file_result(path: Path | str, outcome: Prediction | Exception) -> FileResult:
    if isinstance(outcome, Prediction):
        return FileResult(str(path), outcome)
    return FileResult(str(path), None, str(outcome))


@dataclass(frozen=True)
class SessionSummary:
    session: SessionRecord
    progress: Progress


class FruitService:
    """Classify, submit, follow, report: built once per process by ``FruitService.create``.

    Who classifies a batch is decided here, once: with the embedded queue, a worker thread
    of this process when no worker is alive (unless the caller asked for queue-only); with
    Kafka, the Spark job, which ``wait`` can only wait for.
    """

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        classifier: Callable[[], PhotoClassifier] | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self._classifier_factory = classifier or (lambda: build_classifier(settings))
        self._worker: threading.Thread | None = None
        self._callbacks: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._adapting = threading.Lock()
        self._stop = threading.Event()

    @classmethod
    def create(cls, settings: Settings | None = None) -> FruitService:
        settings = settings or load_settings()
        return cls(settings, build_backends(settings))

    @property
    def classifier(self) -> PhotoClassifier:
        """The process-wide classifier, loaded on first use, answering with the live model
        version (followed at most once a second)."""
        clf = self._classifier_factory()
        self.versions.follow(clf)
        return clf

    @functools.cached_property
    def versions(self) -> Versions:
        """Adapting, listing and switching model versions (shared through the database)."""
        return Versions(
            self.backends.db,
            self.backends.store,
            self._classifier_factory,
            self.settings.dataset_dir,
            self.settings.data_dir / "cache",
        )

    # --- one photo, or files on disk ------------------------------------------------------

    def classify_one(self, data: bytes, top_k: int | None = None) -> Prediction:
        """One photo, at once, in process; ``ImageError`` says why it cannot be classified."""
        return self.classifier.classify(data, top_k=top_k or self.settings.top_k)

    def classify_files(
        self,
        paths: Iterable[Path],
        top_k: int | None = None,
        bar: _Bar | None = None,
        skipped: list[tuple[Path, str]] | None = None,
    ) -> Iterator[FileResult]:
        """Files and folders (recursively) in batches, one result per file in path order.

        A file that cannot be read or decoded gets its ``error``; the others go on. Paths
        left out of folders (links, hidden files) are appended to ``skipped`` with why.
        """
        clf = self.classifier
        k = top_k or self.settings.top_k
        files = list(expand_paths(paths, skipped))
        if bar is not None:
            bar.total = len(files)
            bar.refresh()
        # Files are read a chunk at a time: memory holds one chunk of photos, not the folder.
        step = self.settings.batch_size
        for start in range(0, len(files), step):
            chunk = files[start : start + step]
            blobs: list[bytes] = []
            readable: list[Path] = []
            for path in chunk:
                try:
                    size = path.stat().st_size
                    if size > clf.limits.max_bytes:  # refused before a byte of it is read
                        check_size(size, clf.limits)
                    blobs.append(path.read_bytes())
                    readable.append(path)
                except ImageTooLargeError as exc:
                    yield file_result(path, exc)
                except OSError as exc:
                    yield file_result(path, OSError(f"cannot read file: {exc.strerror or exc}"))
            for path, outcome in zip(readable, clf.classify_many(blobs, top_k=k), strict=True):
                yield file_result(path, outcome)
            if bar is not None:
                bar.update(len(chunk))

    # --- batches --------------------------------------------------------------------------

    def pipeline(self) -> Pipeline:
        """Submit and read sessions over the configured backends."""
        b = self.backends
        return Pipeline(b.store, b.publisher, b.db, b.db, self.settings.limits, b.model_version)

    def submit(
        self,
        uploads: Sequence[Upload],
        name: str = "",
        queue_only: bool = False,
        owner: str = "",
        callback: str | None = None,
    ) -> SubmitReport:
        """Store and queue a batch (every photo is queued or has its error row), then see
        that something classifies it: unless ``queue_only``, a worker thread of this process
        when the queue is embedded and no worker is alive (``report.classified_here``; the
        caller then waits, or stops the service, before it exits)."""
        if callback is not None:  # refused before anything is stored
            check_callback(callback, *self._callback_config())
        report = self.pipeline().submit(uploads, name=name, owner=owner)
        if callback is not None:
            self.backends.db.add_callback(report.session_id, callback)
        if not queue_only:
            report.classified_here = self.ensure_worker()
        return report

    def keep(self, filename: str, data: bytes, prediction: Prediction, owner: str = "") -> str:
        """A photo classified by ``classify_one``, kept in the owner's history as a finished
        one-photo session named after the file; returns its session id."""
        return self.pipeline().keep(filename, data, prediction, name=filename, owner=owner)

    # ``owner``, where a method takes it: only that owner's sessions exist for the caller (an
    # API token sees the batches it submitted); None: every session.

    def session(self, session_id: str, owner: str | None = None) -> SessionRecord:
        """``NotFoundError`` for an unknown session, or one of another owner."""
        found = self.backends.db.get_session(session_id)
        if owner is not None and found.owner != owner:
            raise NotFoundError(f"no session {session_id!r}")  # as if it did not exist
        return found

    def once(self, key: str, work: Callable[[], str]) -> tuple[str, bool]:
        """Carry ``work`` out once per ``key`` (an idempotency key, hashed with whoever sent
        it): the first call runs it and records the answer it returns; a repeat gets that
        answer and True. ``ConflictError`` while the first is still running; should it fail,
        the key is free again."""
        db = self.backends.db
        known = db.claim(key)
        if known == "":
            raise ConflictError("a request with this Idempotency-Key is still being carried out")
        if known is not None:
            return known, True
        try:
            answer = work()
        except BaseException:
            db.release(key)
            raise
        db.settle(key, answer)
        return answer, False

    def progress(self, session_id: str, owner: str | None = None) -> Progress:
        """``NotFoundError`` for an unknown session."""
        self.session(session_id, owner)
        return self.backends.db.progress(session_id)

    def results(
        self,
        session_id: str,
        limit: int | None = None,
        after: str | None = None,
        owner: str | None = None,
    ) -> list[ResultRow]:
        """The session's rows in file name order; a page of ``limit`` after the row whose
        image id is ``after``."""
        self.session(session_id, owner)
        return self.pipeline().results_of(session_id, limit, after)

    def results_page(
        self,
        session_id: str,
        limit: int | None = None,
        after: str | None = None,
        owner: str | None = None,
    ) -> tuple[list[ResultRow], Progress]:
        """A page of the session's rows and how far the session is, the session looked up
        once (``NotFoundError`` for an unknown or another owner's session)."""
        self.session(session_id, owner)
        progress = self.backends.db.progress(session_id)
        return self.backends.db.results(session_id, limit, after), progress

    def sessions(
        self, limit: int = 50, before: str | None = None, owner: str | None = None
    ) -> list[SessionSummary]:
        """Newest first; a page of ``limit`` after the session ``before``."""
        db = self.backends.db
        if before is not None:
            self.session(before, owner)
        found = db.sessions(limit=limit, before=before, owner=owner)
        return [SessionSummary(s, db.progress(s.session_id)) for s in found]

    def wait(
        self,
        session_id: str,
        timeout: float | None = None,
        poll: float = 0.2,
        on_progress: Callable[[Progress], None] | None = None,
        on_no_worker: Callable[[], None] | None = None,
        queue_only: bool = False,
    ) -> Progress:
        """Poll until the session is complete or ``timeout`` seconds pass; the last progress.

        About once a second it checks that a worker is alive. Should none be, one is started
        here when the queue is embedded and not ``queue_only``; else ``on_no_worker`` is told
        (once), since only the user can start one (``fruitstream worker`` or the Spark job).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_check = time.monotonic()
        told = False
        while True:
            progress = self.progress(session_id)
            if on_progress is not None:
                on_progress(progress)
            if progress.complete or (deadline is not None and time.monotonic() >= deadline):
                return progress
            if time.monotonic() - last_check >= 1.0 and not self.worker_alive():
                last_check = time.monotonic()
                if not queue_only and self.can_classify_here():
                    self.ensure_worker()
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
        wait = self.settings.stalled_submit_seconds if older_than is None else older_than
        return self.pipeline().repair(older_than=wait)

    # --- labels: what people say the photos show ------------------------------------------

    def label(
        self,
        text: str,
        image_id: str | None = None,
        data: bytes | None = None,
        source: str = "cli",
        filename: str = "",
    ) -> Label:
        """Keep a person's label of a batch photo (``image_id``) or of a photo given now
        (``data``), beside the model's answer; ``LabelError`` for a label that names nothing,
        ``ImageError`` for bytes that are not a photo."""
        if (image_id is None) == (data is None):
            raise LabelError("a label is of one photo: an image id, or the photo itself")
        if image_id is not None:
            label = label_of_row(self.backends.db, self.backends.store, image_id, text, source)
        else:
            assert data is not None
            label = label_of_photo(
                self.backends.db,
                self.backends.store,
                self.classify_one,
                self.classifier.bundle.model_version,
                data,
                text,
                source,
                filename,
            )
        self._adapt_when_due()
        return label

    def labels(self, limit: int = 50, before: str | None = None) -> list[Label]:
        """Each photo's current label, newest first; a page after the label ``before``."""
        return self.backends.db.labels(limit=limit, before=before)

    def unlabel(self, label_id: str) -> Label:
        """Take a label back; the photo's previous label, if any, is current again."""
        return self.backends.db.remove_label(label_id)

    def teach(self, folder: Path, source: str = "teach") -> TeachReport:
        """Label every photo of ``folder/<label>/`` with its folder's name."""
        return teach(
            folder,
            lambda data, text, name: self.label(text, data=data, source=source, filename=name),
            self.settings.limits,
        )

    # --- model versions -------------------------------------------------------------------

    def adapt(self, method: str = "mix", force: bool = False) -> AdaptReport:
        """A new model version from every label, live if the guard passes it (or ``force``)."""
        return self.versions.adapt(method, force)

    def models(self) -> tuple[list[ModelVersion], str]:
        """Every adapted version, newest first, and the live one."""
        return self.versions.listing()

    def activate(self, version: str) -> str:
        """Make ``version`` (``base``: the shipped model) live for every process."""
        return self.versions.activate(version)

    def rollback(self) -> str:
        """Back to the live version's parent; returns the version now live."""
        return self.versions.rollback()

    def _adapt_when_due(self) -> None:
        """With ``adapt_every`` N: adapt in the background once N labels came since the
        newest version (one adaptation at a time; the guard still decides)."""
        every = self.settings.adapt_every
        if not every or not self._adapting.acquire(blocking=False):
            return
        started = False
        try:
            versions = self.backends.db.versions()
            wanted = (versions[0].labels_used if versions else 0) + every
            # One page of at most ``wanted`` labels says it: not every label on every label.
            if len(self.labels(limit=wanted)) >= wanted:
                threading.Thread(
                    target=self._adapt_in_background, name="adapt", daemon=True
                ).start()
                started = True
        finally:
            if not started:  # else the thread releases it when done
                self._adapting.release()

    def _adapt_in_background(self) -> None:
        try:
            report = self.adapt()
            log.info(
                "adapted on its own: %s (%s)", report.version.version,
                "live" if report.active else "; ".join(report.version.refused),
            )  # fmt: skip
        except FruitstreamError as exc:
            log.warning("adapting on its own failed: %s", exc)
        finally:
            self._adapting.release()

    # --- who classifies the queue ---------------------------------------------------------

    def can_classify_here(self) -> bool:
        """Whether this process can classify queued photos itself (the embedded queue)."""
        return self.backends.consumes_locally

    def worker_alive(self) -> bool:
        """A worker or Spark job beat recently and runs, or this process has a worker."""
        here = self._worker is not None and self._worker.is_alive()
        return here or bool(live_workers(self.backends.db))

    def ensure_worker(self) -> bool:
        """Start a worker thread in this process when nothing classifies the embedded queue;
        returns whether one was started. It runs until ``stop``."""
        if not self.can_classify_here():
            return False
        with self._worker_lock:
            if self.worker_alive():
                return False
            worker = self.worker()
            worker.announce()  # before the thread: its warm-up can outlast the first page
            self._worker = threading.Thread(
                target=worker.run, args=(self._stop,), name="fruitstream-worker", daemon=True
            )
            self._worker.start()
            return True

    def worker(self, classifier: PhotoClassifier | None = None) -> Worker:
        """A worker over the embedded queue, whose chores free the leases of dead workers
        and repair stalled submits (``ConfigError`` with Kafka: the Spark job consumes it)."""
        if not self.can_classify_here():
            raise ConfigError(
                "the embedded worker consumes the local queue only; with Kafka, run the Spark "
                "job (fruitstream spark-job)"
            )
        name = worker_id()
        consumer = self.backends.consumer(name)
        clf = classifier or self.classifier
        reclaim = getattr(consumer, "reclaim", None)  # queues with leases free dead owners'

        def chores() -> None:
            if reclaim is not None:
                reclaim(owner_is_dead)
            self.repair()

        return Worker(
            consumer,
            self.backends.store,
            self.backends.db,
            clf,
            heartbeats=self.backends.db,
            batch_size=self.settings.worker_batch_size,
            poll_seconds=self.settings.worker_poll_seconds,
            top_k=self.settings.top_k,
            name=name,
            lease_seconds=self.settings.lease_seconds,
            housekeeping=chores,
            housekeeping_seconds=self._chores_seconds(),
            before_batch=lambda: self.versions.follow(clf),
        )

    def housekeeping(self, name: str, kind: str) -> Housekeeping:
        """The heartbeat and chores of a worker that is not a ``Worker`` (the Spark job)."""
        return Housekeeping(self.backends.db, name, kind, self.repair, self._chores_seconds())

    def _chores_seconds(self) -> float:
        return min(HOUSEKEEPING_SECONDS, self.settings.stalled_submit_seconds / 2)

    def run_worker(
        self, stop: threading.Event, started: Callable[[str], None] | None = None
    ) -> WorkerStats:
        """Be a worker until ``stop`` is set (``fruitstream worker``): embedded queue only."""
        worker = self.worker()
        if started is not None:
            started(worker.name)
        return worker.run(stop)

    def _callback_config(self) -> tuple[list[str], str | None]:
        secret = self.settings.api_callback_secret
        return self.settings.api_callback_host_list, secret.get_secret_value() if secret else None

    def ensure_callbacks(self) -> bool:
        """Start this process's callback sender when callbacks are configured; whether one
        was started."""
        hosts, secret = self._callback_config()
        if not hosts or not secret:
            return False
        with self._worker_lock:
            if self._callbacks is not None and self._callbacks.is_alive():
                return False
            sender = CallbackSender(self.backends.db, self.backends.post, secret, hosts)
            self._callbacks = threading.Thread(
                target=sender.run, args=(self._stop,), name="fruitstream-callbacks", daemon=True
            )
            self._callbacks.start()
            return True

    def stop(self, timeout: float = 30.0) -> None:
        """Stop this process's worker thread, after the batch in hand, and its callbacks."""
        self._stop.set()
        for thread in (self._worker, self._callbacks):
            if thread is not None:
                thread.join(timeout)

    # --- the Spark job: its driver, and what an executor does with its rows ----------------

    def prepare_stream(self) -> None:
        """Before a streaming job starts: the results tables exist (a clear error when the
        database does not answer) and so does the topic."""
        health = self.backends.db.health()  # creates the tables on first use
        if not health.ok:
            raise ResultStoreError(health.detail)
        ensure_topic = getattr(self.backends.publisher, "ensure_topic", None)
        if ensure_topic is not None:
            ensure_topic()

    def process(self, deliveries: Sequence[Delivery], can_retry: bool = True) -> BatchOutcome:
        """Messages to result rows, one photo never failing another (``process_batch``)."""
        return process_batch(
            deliveries, self.backends.store, self.classifier, self.settings.top_k, can_retry
        )

    def save(self, rows: Sequence[ResultRow]) -> None:
        """Upsert result rows (a replayed batch rewrites the same rows)."""
        self.backends.db.upsert(rows)

    # --- health ---------------------------------------------------------------------------

    def health(self) -> list[Health]:
        """Every backend and the workers, each with ready-made figures to show, then the
        model: which graph runs here and why."""
        b = self.backends
        return [*backends_health(b.store, b.publisher, b.db), self.model_health()]

    def model_health(self) -> Health:
        """The configured model and its graph, read from disk without loading a session."""
        try:
            bundle = self.backends.bundle
        except FruitstreamError as exc:
            return model_health(exc)
        try:
            live = self.backends.db.active_version()
        except FruitstreamError:
            live = None  # the database's own line says why
        return model_health(bundle, live)

    def live_workers(self) -> list[tuple[str, str, dict[str, object]]]:
        """``(name, kind, last heartbeat)`` of every live worker and Spark job."""
        return [(name, kind, info) for name, kind, _at, info in live_workers(self.backends.db)]

    def build_info(self) -> dict[str, str]:
        """What runs here: the fruitstream version, the model and its graph."""
        info = {"version": __version__}
        try:
            bundle = self.backends.bundle
        except FruitstreamError:
            return {**info, "model": "unavailable", "precision": ""}
        return {**info, "model": bundle.model_version, "precision": bundle.precision}

    def queue_lag(self) -> float | None:
        """Photos waiting: the Spark job's Kafka lag, or the embedded queue's depth."""
        return lag_of(self.health())

    def ready(self) -> tuple[bool, list[Health]]:
        checks = self.health()
        return is_ready(checks), checks
