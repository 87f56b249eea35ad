"""Wires the classifier and the adapters from settings; one classifier per process."""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from fruitstream.adapters.local_queue import SqlQueue
from fruitstream.adapters.local_store import LocalObjectStore
from fruitstream.adapters.sql import SqlDatabase
from fruitstream.config import Settings
from fruitstream.core.classifier import Classifier
from fruitstream.core.precision import choose_precision
from fruitstream.errors import BackendError, ConfigError
from fruitstream.model.bundle import ModelBundle, default_bundle_dir
from fruitstream.pipeline import Pipeline
from fruitstream.ports import Consumer, Health, ObjectStore, Publisher, ResultsDatabase
from fruitstream.worker import HOUSEKEEPING_SECONDS, Worker, worker_id

if TYPE_CHECKING:
    from fruitstream.adapters.kafka import KafkaConnection

_classifiers: dict[tuple[object, ...], Classifier] = {}
_lock = threading.Lock()

# A worker whose last heartbeat is older than this is reported as down.
HEARTBEAT_STALE_SECONDS = 15.0


def load_bundle(
    settings: Settings, model_dir: str | Path | None = None, precision: str | None = None
) -> ModelBundle:
    """The configured model bundle, set to run the graph chosen for this machine: the given or
    configured precision, where ``auto`` decides by the CPU and the bundle's figures."""
    path = Path(model_dir or settings.model_dir or default_bundle_dir()).resolve()
    bundle = ModelBundle.load(path)
    choice = choose_precision(bundle, precision or settings.model_precision)
    return bundle.with_precision(choice.precision, choice.reason)


def build_classifier(
    settings: Settings, model_dir: str | Path | None = None, precision: str | None = None
) -> Classifier:
    """The process-wide classifier for these settings (loaded once, then shared)."""
    path = Path(model_dir or settings.model_dir or default_bundle_dir()).resolve()
    wanted = precision or settings.model_precision
    key = (str(path), wanted, settings.threads, settings.limits)
    with _lock:
        clf = _classifiers.get(key)
        if clf is None:
            clf = Classifier(
                load_bundle(settings, path, wanted),
                limits=settings.limits,
                threads=settings.threads,
            )
            _classifiers[key] = clf
        return clf


def is_alive(beat_at: datetime, info: dict[str, object]) -> bool:
    """Whether a heartbeat stands for a live consumer.

    A clean stop writes ``state: stopped``; a killed process cannot, so one on this machine
    is looked up by its pid rather than trusted for the whole heartbeat window.
    """
    if (datetime.now(UTC) - beat_at).total_seconds() >= HEARTBEAT_STALE_SECONDS:
        return False
    if info.get("state") == "stopped":
        return False
    pid = info.get("pid")
    return not (isinstance(pid, int) and _gone(str(info.get("host")), pid))


def owner_is_dead(owner: str) -> bool:
    """Whether a lease owner (``host:pid:thread``, see ``worker_id``) is a process of this
    machine that no longer runs; owners elsewhere are left to lease expiry."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return pid.isdigit() and _gone(host, int(pid))


def _gone(host: str, pid: int) -> bool:
    """Whether ``pid`` on ``host`` is known to have ended: only this machine can tell."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


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
    extra_health: list[Health] = field(default_factory=list)

    @functools.cached_property
    def bundle(self) -> ModelBundle:
        """The configured model and the graph chosen for this machine, read once (no ONNX
        session needed)."""
        return load_bundle(self.settings)

    @property
    def model_version(self) -> str:
        """``name:version`` of the configured model, as result rows record it."""
        return self.bundle.model_version

    def pipeline(self) -> Pipeline:
        return Pipeline(
            self.store,
            self.publisher,
            self.db,
            self.db,
            self.settings.limits,
            model_version=self.model_version,
        )

    def consumer(self, owner: str) -> Consumer:
        if self.consumers is None:
            raise ConfigError(
                "the embedded worker consumes the local queue only; with Kafka, run the Spark "
                "job (fruitstream spark-job)"
            )
        return self.consumers(owner)

    def worker(self, classifier: Classifier | None = None) -> Worker:
        name = worker_id()
        consumer = self.consumer(name)
        reclaim = getattr(consumer, "reclaim", None)  # queues with leases free dead owners'

        def housekeeping() -> None:
            if reclaim is not None:
                reclaim(owner_is_dead)
            self.repair()

        return Worker(
            consumer,
            self.store,
            self.db,
            classifier or build_classifier(self.settings),
            heartbeats=self.db,
            batch_size=self.settings.worker_batch_size,
            poll_seconds=self.settings.worker_poll_seconds,
            top_k=self.settings.top_k,
            name=name,
            lease_seconds=self.settings.lease_seconds,
            housekeeping=housekeeping,
            housekeeping_seconds=min(
                HOUSEKEEPING_SECONDS, self.settings.stalled_submit_seconds / 2
            ),
        )

    def repair(self) -> dict[str, int]:
        """Finish the submits that stalled longer than the configured time."""
        return self.pipeline().repair(older_than=self.settings.stalled_submit_seconds)

    def live_workers(self) -> list[tuple[str, str, datetime, dict[str, object]]]:
        """Workers and Spark jobs that beat recently, have not said they stopped, and (when
        on this machine) are still running."""
        try:
            beats = self.db.latest()
        except BackendError:
            return []
        return [b for b in beats if is_alive(b[2], b[3])]

    @property
    def consumes_locally(self) -> bool:
        """Whether a worker in this process can consume the configured queue."""
        return self.consumers is not None

    def health(self) -> list[Health]:
        checks = [self.store.health(), self.publisher.health(), self.db.health()]
        live = self.live_workers()
        if live:
            extra: dict[str, object] = {"rate": sum(float(str(b[3].get("rate", 0))) for b in live)}
            spark = [b[3] for b in live if b[1] == "spark"]
            if spark:  # the streaming query's own figures: Kafka lag and rates
                extra = {
                    k: spark[0][k]
                    for k in ("lag", "input_rate", "processed_rate")
                    if spark[0].get(k) is not None
                }
            kinds = ", ".join(sorted({b[1] for b in live}))
            detail = f"{len(live)} alive ({kinds}), last beat {live[0][2]:%H:%M:%S} UTC"
            checks.append(Health("workers", True, detail, extra, figures(extra)))
        else:
            checks.append(
                Health("workers", False, "no worker heartbeat in the last 15 s (none running)")
            )
        return checks + self.extra_health


_FIGURES = {
    "rate": "{:.1f} photos/s",
    "lag": "lag {:,} messages",
    "input_rate": "input {:.1f} rows/s",
    "processed_rate": "processed {:.1f} rows/s",
}


def figures(extra: dict[str, object]) -> tuple[str, ...]:
    """The lines a person reads under a backend's state, from its machine figures."""
    return tuple(
        fmt.format(extra[key]) for key, fmt in _FIGURES.items() if extra.get(key) is not None
    )


# --- the one place where configuration chooses backends --------------------------------------
# Adding a backend: one adapter module, one row in a table below, its settings in config.py.


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _local_store(settings: Settings) -> ObjectStore:
    return LocalObjectStore(settings.data_dir / "objects")


def _s3_store(settings: Settings) -> ObjectStore:
    from fruitstream.adapters.s3 import S3ObjectStore

    return S3ObjectStore.connect(
        settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=_secret(settings.s3_access_key_id),
        secret_access_key=_secret(settings.s3_secret_access_key),
    )


def kafka_connection(settings: Settings) -> KafkaConnection:
    from fruitstream.adapters.kafka import KafkaConnection

    def path(value: Path | None) -> str | None:
        return str(value) if value is not None else None

    return KafkaConnection(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        security_protocol=settings.kafka_security_protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        sasl_username=settings.kafka_sasl_username,
        sasl_password=_secret(settings.kafka_sasl_password),
        ssl_cafile=path(settings.kafka_ssl_cafile),
        ssl_certfile=path(settings.kafka_ssl_certfile),
        ssl_keyfile=path(settings.kafka_ssl_keyfile),
        ssl_key_password=_secret(settings.kafka_ssl_key_password),
        ssl_check_hostname=settings.kafka_ssl_check_hostname,
    )


def _local_queue(settings: Settings, db: SqlDatabase) -> Publisher:
    return SqlQueue(db, lease_seconds=settings.lease_seconds)


def _kafka_queue(settings: Settings, db: SqlDatabase) -> Publisher:
    from fruitstream.adapters.kafka import KafkaPublisher

    return KafkaPublisher.connect(
        kafka_connection(settings),
        settings.kafka_topic,
        settings.kafka_partitions,
        settings.kafka_replication_factor,
    )


def _local_consumers(settings: Settings, db: SqlDatabase) -> Callable[[str], Consumer]:
    return lambda owner: SqlQueue(db, owner=owner, lease_seconds=settings.lease_seconds)


STORES: dict[str, Callable[[Settings], ObjectStore]] = {"local": _local_store, "s3": _s3_store}
PUBLISHERS: dict[str, Callable[[Settings, SqlDatabase], Publisher]] = {
    "local": _local_queue,
    "kafka": _kafka_queue,
}
# Queue kinds a worker thread of any fruitstream process can consume; the others have their
# own runner (Kafka: the Spark job).
CONSUMERS: dict[str, Callable[[Settings, SqlDatabase], Callable[[str], Consumer]]] = {
    "local": _local_consumers,
}


def build_store(settings: Settings) -> ObjectStore:
    return STORES[settings.storage](settings)


def build_backends(settings: Settings) -> Backends:
    db = SqlDatabase.from_url(settings.sqlalchemy_url)
    consumers = CONSUMERS.get(settings.queue)
    return Backends(
        settings,
        build_store(settings),
        PUBLISHERS[settings.queue](settings, db),
        db,
        consumers(settings, db) if consumers is not None else None,
    )
