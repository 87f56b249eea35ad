"""The application service: the one thing entrypoints call, a thin facade over the use
cases, each in a module of this package by concern.

- ``classify``: one photo, or files on disk, at once in this process;
- ``batches``: submit, keep, sessions, progress, results, wait, repair, idempotency;
- ``workers``: who classifies the queue (the worker policy), callbacks;
- ``models``: labels, teaching, adapting, model versions;
- ``operations``: health, readiness, lag;
- ``stream``: the Spark job's driver and executors.

``bootstrap`` builds it from settings (the composition root); nothing here imports
``bootstrap``. Every call about whose data it is takes a ``Caller``. See
docs/ARCHITECTURE.md for the layers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from fruitstream.config import Settings
from fruitstream.domain import (
    OPERATOR,
    Caller,
    Label,
    ModelVersion,
    Prediction,
    Progress,
    ResultRow,
    SessionRecord,
)
from fruitstream.pipeline import Pipeline, SubmitReport, Upload
from fruitstream.ports import Health, PhotoClassifier
from fruitstream.service.backends import Backends
from fruitstream.service.batches import Batches, SessionSummary, request_fingerprint
from fruitstream.service.classify import Bar, Classifying, FileResult, file_result
from fruitstream.service.labels import TeachReport
from fruitstream.service.models import Models
from fruitstream.service.operations import Operations
from fruitstream.service.versions import AdaptReport, Versions
from fruitstream.service.workers import Workers
from fruitstream.worker import Worker, WorkerStats

__all__ = ["Backends", "FileResult", "FruitService", "SessionSummary", "file_result"]


class FruitService:
    """Classify, submit, follow, report: built once per process by ``bootstrap.build_service``.

    ``classifier`` makes (or returns) the process-wide classifier; ``start_workers`` is the
    worker policy (``Workers``): whether this process starts a worker thread for the
    embedded queue when nothing else classifies it.
    """

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        classifier: Callable[[], PhotoClassifier],
        start_workers: bool = True,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.model = Models(settings, backends, classifier)
        self.workers = Workers(
            settings, backends, self.model.classifier, self.model.follow, backends.repair,
            start_workers,
        )  # fmt: skip
        self.batches = Batches(settings, backends, self.workers)
        self.operations = Operations(backends, self.workers.running_here)
        self._classify = Classifying(settings, self.model.classifier)

    @property
    def classifier(self) -> PhotoClassifier:
        """The process-wide classifier, answering with the live model version."""
        return self.model.classifier()

    @property
    def versions(self) -> Versions:
        return self.model.versions

    # --- one photo, or files on disk ------------------------------------------------------

    def classify_one(self, data: bytes, top_k: int | None = None) -> Prediction:
        return self._classify.classify_one(data, top_k)

    def classify_files(
        self,
        paths: Iterable[Path],
        top_k: int | None = None,
        bar: Bar | None = None,
        skipped: list[tuple[Path, str]] | None = None,
    ) -> Iterator[FileResult]:
        return self._classify.classify_files(paths, top_k, bar, skipped)

    # --- batches (``Batches``) ------------------------------------------------------------

    def pipeline(self) -> Pipeline:
        return self.batches.pipeline()

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
        return self.batches.submit(
            uploads, name, queue_only, callback, caller=caller, session_id=session_id
        )

    def keep(
        self, filename: str, data: bytes, prediction: Prediction, *, caller: Caller = OPERATOR
    ) -> str:
        return self.batches.keep(filename, data, prediction, caller=caller)

    def session(self, session_id: str, *, caller: Caller = OPERATOR) -> SessionRecord:
        return self.batches.session(session_id, caller=caller)

    def once(
        self,
        key: str,
        work: Callable[[str], str],
        *,
        fingerprint: str = "",
        recover: Callable[[SubmitReport], str] | None = None,
        caller: Caller = OPERATOR,
    ) -> tuple[str, bool]:
        return self.batches.once(key, work, fingerprint=fingerprint, recover=recover, caller=caller)

    def fingerprint(
        self, uploads: Sequence[Upload], name: str = "", callback: str | None = None
    ) -> str:
        """What a submit asks for, as the hash ``once`` compares (``request_fingerprint``)."""
        return request_fingerprint(uploads, name, callback)

    def progress(self, session_id: str, *, caller: Caller = OPERATOR) -> Progress:
        return self.batches.progress(session_id, caller=caller)

    def results(
        self,
        session_id: str,
        limit: int | None = None,
        after: str | None = None,
        *,
        caller: Caller = OPERATOR,
    ) -> list[ResultRow]:
        return self.batches.results(session_id, limit, after, caller=caller)

    def results_page(
        self,
        session_id: str,
        limit: int | None = None,
        after: str | None = None,
        *,
        caller: Caller = OPERATOR,
    ) -> tuple[list[ResultRow], Progress]:
        return self.batches.results_page(session_id, limit, after, caller=caller)

    def sessions(
        self, limit: int = 50, before: str | None = None, *, caller: Caller = OPERATOR
    ) -> list[SessionSummary]:
        return self.batches.sessions(limit, before, caller=caller)

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
        return self.batches.wait(
            session_id, timeout, poll, on_progress, on_no_worker, queue_only, caller=caller
        )

    def photo(self, object_key: str) -> bytes:
        return self.batches.photo(object_key)

    def repair(self, older_than: float | None = None) -> dict[str, int]:
        return self.batches.repair(older_than)

    # --- labels and model versions (``Models``) -------------------------------------------

    def label(
        self,
        text: str,
        image_id: str | None = None,
        data: bytes | None = None,
        source: str = "cli",
        filename: str = "",
    ) -> Label:
        return self.model.label(text, image_id, data, source, filename)

    def labels(self, limit: int = 50, before: str | None = None) -> list[Label]:
        return self.model.labels(limit, before)

    def unlabel(self, label_id: str) -> Label:
        return self.model.unlabel(label_id)

    def teach(self, folder: Path, source: str = "teach") -> TeachReport:
        return self.model.teach(folder, source)

    def adapt(self, method: str = "mix", force: bool = False) -> AdaptReport:
        return self.model.adapt(method, force)

    def models(self) -> tuple[list[ModelVersion], str]:
        return self.model.models()

    def activate(self, version: str) -> str:
        return self.model.activate(version)

    def rollback(self) -> str:
        return self.model.rollback()

    # --- who classifies the queue (``Workers``) -------------------------------------------

    def start(self) -> None:
        """A serving process begins: its worker and callback sender, as the policy says."""
        self.workers.start()

    def can_classify_here(self) -> bool:
        return self.workers.can_classify_here()

    def worker_alive(self) -> bool:
        return self.workers.alive()

    def ensure_worker(self) -> bool:
        return self.workers.ensure()

    def worker(self, classifier: PhotoClassifier | None = None) -> Worker:
        return self.workers.worker(classifier)

    def run_worker(
        self, stop: threading.Event, started: Callable[[str], None] | None = None
    ) -> WorkerStats:
        return self.workers.run_worker(stop, started)

    def ensure_callbacks(self) -> bool:
        return self.workers.ensure_callbacks()

    def stop(self, timeout: float = 30.0) -> None:
        self.workers.stop(timeout)

    # --- health (``Operations``) ----------------------------------------------------------

    def health(self) -> list[Health]:
        return self.operations.health()

    def model_health(self) -> Health:
        return self.operations.model_health()

    def live_workers(self) -> list[tuple[str, str, dict[str, object]]]:
        return self.operations.live_workers()

    def build_info(self) -> dict[str, str]:
        return self.operations.build_info()

    def queue_lag(self) -> float | None:
        return self.operations.queue_lag()

    def ready(self) -> tuple[bool, list[Health]]:
        return self.operations.ready()
