"""The ports one service runs over, as the composition root (``bootstrap``) chose them."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fruitstream.config import Settings
from fruitstream.core.precision import load_bundle
from fruitstream.errors import ConfigError
from fruitstream.model.bundle import ModelBundle
from fruitstream.pipeline import Pipeline
from fruitstream.ports import Consumer, ObjectStore, Publisher, ResultsDatabase

# Sends a batch-complete callback: (url, body, headers) -> HTTP status, 0 for none.
Post = Callable[[str, bytes, Mapping[str, str]], int]


def _not_wired(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    raise ConfigError("no callback sender is wired: build the service with bootstrap")


@dataclass
class Backends:
    """The adapters chosen by configuration, built once and shared."""

    settings: Settings
    store: ObjectStore
    publisher: Publisher
    db: ResultsDatabase
    # Makes a consumer of the queue for a worker in this process (owner name -> consumer);
    # None: the queue has its own runner (Kafka: the Spark job).
    consumers: Callable[[str], Consumer] | None = None
    post: Post = _not_wired

    @functools.cached_property
    def bundle(self) -> ModelBundle:
        """The configured model and the graph chosen for this machine, read once (no ONNX
        session needed)."""
        return load_bundle(self.settings.model_dir, self.settings.model_precision)

    @property
    def model_version(self) -> str:
        """``name:version`` of the configured model, as result rows record it."""
        return self.bundle.model_version

    def pipeline(self) -> Pipeline:
        """Submit, keep, read and repair sessions over these backends."""
        return Pipeline(
            self.store, self.publisher, self.db, self.db, self.settings.limits, self.model_version
        )

    def repair(self, older_than: float | None = None) -> dict[str, int]:
        """Finish the submits that stopped half way (older than the configured time unless
        said): the one entrance, for ``fruitstream repair`` and every worker's chores."""
        wait = self.settings.stalled_submit_seconds if older_than is None else older_than
        return self.pipeline().repair(older_than=wait)

    def consumer(self, owner: str) -> Consumer:
        if self.consumers is None:
            raise ConfigError(
                "the embedded worker consumes the local queue only; with Kafka, run the Spark "
                "job (fruitstream spark-job)"
            )
        return self.consumers(owner)

    @property
    def consumes_locally(self) -> bool:
        """Whether a worker in this process can consume the configured queue."""
        return self.consumers is not None
