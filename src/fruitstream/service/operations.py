"""What runs and how it is: every backend's health, the workers, the model, readiness and
the queue's lag, for the CLI's status, the app's sidebar and the API's probes."""

from __future__ import annotations

from collections.abc import Callable

from fruitstream import __version__
from fruitstream.errors import FruitstreamError
from fruitstream.ports import Health
from fruitstream.service.backends import Backends
from fruitstream.service.health import backends_health, is_ready, live_workers, model_health
from fruitstream.service.health import queue_lag as lag_of


class Operations:
    """Health and readiness over the configured backends."""

    def __init__(self, backends: Backends, running_here: Callable[[], bool] | None = None) -> None:
        self.backends = backends
        # Whether this process's own worker runs: a beat of this process counts only then.
        self._running_here = running_here or (lambda: False)

    def health(self) -> list[Health]:
        """Every backend and the workers, each with ready-made figures to show, then the
        model: which graph runs here and why."""
        b = self.backends
        here = self._running_here()
        return [*backends_health(b.store, b.publisher, b.db, here), self.model_health()]

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
        live = live_workers(self.backends.db, self._running_here())
        return [(name, kind, info) for name, kind, _at, info in live]

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
