"""The application service: every use case of fruitstream, the one thing entrypoints call.

The CLI, the Streamlit app, the HTTP API and the Spark job's wiring only translate input and
output; what happens (classify a photo, submit a batch, follow it, report health, make sure
something consumes the queue) is written here once, against the ports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fruitstream.bootstrap import Backends, build_backends, build_classifier
from fruitstream.config import Settings, load_settings
from fruitstream.core.classifier import Classifier
from fruitstream.core.imaging import check_size
from fruitstream.core.precision import cpu_features
from fruitstream.dataset import expand_paths
from fruitstream.domain import Prediction, Progress, ResultRow, SessionRecord
from fruitstream.errors import ConfigError, FruitstreamError, ImageTooLargeError
from fruitstream.pipeline import SubmitReport, Upload
from fruitstream.ports import Health
from fruitstream.worker import WorkerStats


class _Bar(Protocol):
    total: float | None

    def update(self, n: float | None = ...) -> bool | None: ...
    def refresh(self) -> None: ...


# The backends whose state decides whether the service is ready (workers may come later).
CORE_BACKENDS = ("storage", "queue", "results database")


def file_record(path: Path | str, outcome: Prediction | Exception) -> dict[str, Any]:
    """The JSON record of ``classify --json`` and ``POST /v1/classify``: always six keys."""
    if isinstance(outcome, Prediction):
        return {"path": str(path), **outcome.to_dict(), "error": None}
    return {
        "path": str(path),
        "label": None,
        "confidence": None,
        "known": None,
        "top_k": [],
        "error": str(outcome),
    }


@dataclass(frozen=True)
class SessionSummary:
    session: SessionRecord
    progress: Progress


class FruitService:
    """Classify, submit, follow, report: built once per process by ``FruitService.create``."""

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        classifier: Callable[[], Classifier] | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self._classifier_factory = classifier or (lambda: build_classifier(settings))
        self._consumer: threading.Thread | None = None
        self._consumer_lock = threading.Lock()
        self._stop = threading.Event()

    @classmethod
    def create(cls, settings: Settings | None = None) -> FruitService:
        settings = settings or load_settings()
        return cls(settings, build_backends(settings))

    @property
    def classifier(self) -> Classifier:
        """The process-wide classifier, loaded on first use."""
        return self._classifier_factory()

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
    ) -> Iterator[dict[str, Any]]:
        """Files and folders (recursively) in batches, one record per file in path order.

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
                    yield file_record(path, exc)
                except OSError as exc:
                    yield file_record(path, OSError(f"cannot read file: {exc.strerror or exc}"))
            for path, outcome in zip(readable, clf.classify_many(blobs, top_k=k), strict=True):
                yield file_record(path, outcome)
            if bar is not None:
                bar.update(len(chunk))

    # --- batches --------------------------------------------------------------------------

    def submit(self, uploads: Sequence[Upload], name: str = "") -> SubmitReport:
        """Store and queue a batch; every photo is queued or has its error row."""
        return self.backends.pipeline().submit(uploads, name=name)

    def progress(self, session_id: str) -> Progress:
        """``NotFoundError`` for an unknown session."""
        return self.backends.db.progress(session_id)

    def results(self, session_id: str) -> list[ResultRow]:
        return self.backends.pipeline().results_of(session_id)

    def sessions(self, limit: int = 50) -> list[SessionSummary]:
        db = self.backends.db
        return [SessionSummary(s, db.progress(s.session_id)) for s in db.sessions(limit=limit)]

    def wait(
        self,
        session_id: str,
        timeout: float | None = None,
        poll: float = 0.2,
        on_progress: Callable[[Progress], None] | None = None,
        on_no_consumer: Callable[[], None] | None = None,
        take_over: bool = True,
    ) -> Progress:
        """Until the session is complete or ``timeout`` passes. Should its consumer go away
        meanwhile, one is started here when ``take_over`` and possible (embedded queue), else
        ``on_no_consumer`` is told (once)."""
        told = False

        def check() -> None:
            nonlocal told
            if self.consumer_alive():
                return
            if take_over and self.can_consume_here():
                self.ensure_consumer(until=lambda: self.progress(session_id).complete)
            elif not told and on_no_consumer is not None:
                told = True
                on_no_consumer()

        return self.backends.pipeline().wait(
            session_id, timeout=timeout, poll=poll, on_progress=on_progress, check=check
        )

    def photo(self, object_key: str) -> bytes:
        """The stored photo of a result row (``NotFoundError`` when it is gone)."""
        return self.backends.store.get(object_key)

    def repair(self, older_than: float | None = None) -> dict[str, int]:
        """Finish the submits that stopped half way."""
        wait = self.settings.stalled_submit_seconds if older_than is None else older_than
        return self.backends.pipeline().repair(older_than=wait)

    # --- who consumes the queue -----------------------------------------------------------

    def can_consume_here(self) -> bool:
        """Whether this process can classify queued photos itself (the embedded queue)."""
        return self.backends.consumes_locally

    def consumer_alive(self) -> bool:
        """A worker or Spark job beat recently and runs, or this process consumes."""
        here = self._consumer is not None and self._consumer.is_alive()
        return here or bool(self.backends.live_workers())

    def ensure_consumer(self, until: Callable[[], bool] | None = None) -> bool:
        """Start a worker thread in this process when nothing consumes the embedded queue;
        returns whether one was started. ``until``: the thread stops once it is true."""
        if not self.can_consume_here():
            return False
        with self._consumer_lock:
            if self.consumer_alive():
                return False
            worker = self.backends.worker(self.classifier)
            self._consumer = threading.Thread(
                target=worker.run, args=(self._stop, until), name="fruitstream-worker", daemon=True
            )
            self._consumer.start()
            return True

    def run_worker(
        self, stop: threading.Event, started: Callable[[str], None] | None = None
    ) -> WorkerStats:
        """Be a worker until ``stop`` is set (``fruitstream worker``): embedded queue only."""
        if not self.can_consume_here():
            raise ConfigError(
                "the embedded worker consumes the local queue only; with Kafka, run the Spark "
                "job (fruitstream spark-job)"
            )
        worker = self.backends.worker(self.classifier)
        if started is not None:
            started(worker.name)
        return worker.run(stop)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop this process's worker thread, after the batch in hand."""
        self._stop.set()
        if self._consumer is not None:
            self._consumer.join(timeout)

    # --- health ---------------------------------------------------------------------------

    def health(self) -> list[Health]:
        """Every backend and the consumers, each with ready-made figures to show, then the
        model: which graph runs here and why."""
        return [*self.backends.health(), self.model_health()]

    def model_health(self) -> Health:
        """The configured model and its graph, read from disk without loading a session."""
        try:
            bundle = self.backends.bundle
        except FruitstreamError as exc:
            return Health("model", False, str(exc))
        return Health(
            "model",
            True,
            f"{bundle.name} v{bundle.version}, {bundle.precision} graph",
            {"precision": bundle.precision},
            (bundle.precision_reason, f"CPU: {cpu_features().describe()}"),
        )

    def queue_lag(self) -> float | None:
        """Photos waiting: the Spark job's Kafka lag, or the embedded queue's depth."""
        checks = self.health()
        for name, key in (("workers", "lag"), ("queue", "depth")):
            for h in checks:
                value = (h.extra or {}).get(key)
                if h.name == name and isinstance(value, int | float):
                    return float(value)
        return None

    def ready(self) -> tuple[bool, list[Health]]:
        checks = self.health()
        return all(h.ok for h in checks if h.name in CORE_BACKENDS), checks
