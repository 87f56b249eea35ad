"""The Spark job's side of the service: what its driver prepares and beats, and what each
executor does with its rows (messages to result rows, rows to the database)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from fruitstream.domain import ResultRow
from fruitstream.errors import ResultStoreError
from fruitstream.housekeeping import Housekeeping
from fruitstream.ports import Delivery, PhotoClassifier
from fruitstream.service.backends import Backends
from fruitstream.service.versions import Versions
from fruitstream.service.workers import housekeeping
from fruitstream.worker import BatchOutcome, process_batch


class StreamRunner:
    """Built once per process (the driver, each executor's Python worker) by bootstrap; it
    loads the model only when a partition needs it."""

    def __init__(self, backends: Backends, classifier: Callable[[], PhotoClassifier]) -> None:
        self.backends = backends
        self.settings = backends.settings
        self._factory = classifier

    @functools.cached_property
    def _versions(self) -> Versions:
        s = self.settings
        b = self.backends
        return Versions(b.db, b.store, self._factory, s.dataset_dir, s.data_dir / "cache")

    def prepare(self) -> None:
        """Before the query starts: the results tables exist (a clear error when the
        database does not answer) and so does the topic."""
        health = self.backends.db.health()  # creates the tables on first use
        if not health.ok:
            raise ResultStoreError(health.detail)
        ensure_topic = getattr(self.backends.publisher, "ensure_topic", None)
        if ensure_topic is not None:
            ensure_topic()

    def process(self, deliveries: Sequence[Delivery], can_retry: bool = False) -> BatchOutcome:
        """Messages to result rows with the live model version, one photo never failing
        another (``process_batch``)."""
        clf = self._factory()
        self._versions.follow(clf)
        b = self.backends
        return process_batch(deliveries, b.store, clf, self.settings.top_k, can_retry)

    def save(self, rows: Sequence[ResultRow]) -> None:
        """Upsert result rows (a replayed batch rewrites the same rows)."""
        self.backends.db.upsert(rows)

    def housekeeping(self, name: str) -> Housekeeping:
        """The driver's heartbeat (kind ``spark``) and chores."""
        return housekeeping(self.backends, self.backends.repair, name, "spark")
