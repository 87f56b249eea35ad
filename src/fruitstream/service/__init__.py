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

from collections.abc import Callable

from fruitstream.config import Settings
from fruitstream.ports import PhotoClassifier
from fruitstream.service.backends import Backends
from fruitstream.service.batches import Batches, SessionSummary, request_fingerprint
from fruitstream.service.classify import Classifying, FileResult, file_result
from fruitstream.service.models import Models
from fruitstream.service.operations import Operations
from fruitstream.service.versions import Versions
from fruitstream.service.workers import Workers

__all__ = ["Backends", "FileResult", "FruitService", "SessionSummary", "file_result"]


class FruitService:
    """Classify, submit, follow, report: built once per process by ``bootstrap.build_service``.

    A facade and nothing more: each call is a use case's own method (its signature and
    docstring are there). ``classifier`` makes (or returns) the process-wide classifier;
    ``start_workers`` is the worker policy (``Workers``): whether this process starts a
    worker thread for the embedded queue when nothing else classifies it.
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
        classifying = Classifying(settings, self.model.classifier)

        # One photo, or files on disk (``Classifying``).
        self.classify_one = classifying.classify_one
        self.classify_files = classifying.classify_files
        # Batches (``Batches``): every call about whose data it is takes ``caller=``.
        self.pipeline = self.batches.pipeline
        self.submit = self.batches.submit
        self.keep = self.batches.keep
        self.session = self.batches.session
        self.once = self.batches.once
        # What a submit asks for, as the hash ``once`` compares.
        self.fingerprint = request_fingerprint
        self.progress = self.batches.progress
        self.results = self.batches.results
        self.results_page = self.batches.results_page
        self.sessions = self.batches.sessions
        self.wait = self.batches.wait
        self.photo = self.batches.photo
        self.repair = self.batches.repair
        # Labels and model versions (``Models``).
        self.label = self.model.label
        self.labels = self.model.labels
        self.unlabel = self.model.unlabel
        self.teach = self.model.teach
        self.adapt = self.model.adapt
        self.models = self.model.models
        self.activate = self.model.activate
        self.rollback = self.model.rollback
        # Who classifies the queue (``Workers``).
        self.start = self.workers.start
        self.can_classify_here = self.workers.can_classify_here
        self.worker_alive = self.workers.alive
        self.ensure_worker = self.workers.ensure
        self.worker = self.workers.worker
        self.run_worker = self.workers.run_worker
        self.ensure_callbacks = self.workers.ensure_callbacks
        self.stop = self.workers.stop
        # Health (``Operations``).
        self.health = self.operations.health
        self.model_health = self.operations.model_health
        self.live_workers = self.operations.live_workers
        self.build_info = self.operations.build_info
        self.queue_lag = self.operations.queue_lag
        self.ready = self.operations.ready

    @property
    def classifier(self) -> PhotoClassifier:
        """The process-wide classifier, answering with the live model version."""
        return self.model.classifier()

    @property
    def versions(self) -> Versions:
        return self.model.versions
