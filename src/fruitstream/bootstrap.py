"""The composition root: builds the service from settings (the adapters each setting
chooses, the process-wide classifier), never the reverse.

Only wiring: which adapter each setting chooses (the tables below), built once. What to do
with them is the service layer's (``fruitstream.service``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from fruitstream.adapters.local_queue import SqlQueue
from fruitstream.adapters.local_store import LocalObjectStore
from fruitstream.adapters.sql import SqlDatabase
from fruitstream.adapters.webhook import post_json
from fruitstream.config import FruitstreamSettings, Settings, load_settings
from fruitstream.core.classifier import Classifier
from fruitstream.core.precision import load_bundle as core_load_bundle
from fruitstream.errors import ConfigError
from fruitstream.model.bundle import ModelBundle, default_bundle_dir
from fruitstream.ports import Consumer, ObjectStore, Publisher
from fruitstream.service import Backends, FruitService
from fruitstream.service.callbacks import CallbackSettings
from fruitstream.service.stream import StreamRunner

_classifiers: dict[tuple[object, ...], Classifier] = {}
_lock = threading.Lock()


def load_bundle(
    settings: Settings, model_dir: str | Path | None = None, precision: str | None = None
) -> ModelBundle:
    """The configured model bundle, set to run the graph chosen for this machine: the given or
    configured precision, where ``auto`` decides by the CPU and the bundle's figures."""
    return core_load_bundle(model_dir or settings.model_dir, precision or settings.model_precision)


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


# --- the one place where configuration chooses backends --------------------------------------
# Adding a backend: one adapter module (with its settings class, read by ``XSettings.of``), one
# row in a table below.


def _local_store(settings: Settings) -> ObjectStore:
    return LocalObjectStore(settings.data_dir / "objects")


def _s3_store(settings: Settings) -> ObjectStore:
    from fruitstream.adapters.s3 import S3ObjectStore, S3Settings

    return S3ObjectStore.connect(S3Settings.of(settings))


def kafka_reader_options(settings: Settings) -> dict[str, str]:
    """Spark's Kafka source options for the configured brokers and topic (the same
    connection settings the publisher uses, translated by the Kafka adapter)."""
    from fruitstream.adapters.kafka import KafkaSettings, java_client_options

    if settings.queue != "kafka":
        raise ConfigError("the Spark job reads Kafka: set FRUITSTREAM_QUEUE=kafka")
    kafka = KafkaSettings.of(settings)
    return {**java_client_options(kafka), "subscribe": kafka.topic}


def _local_queue(settings: Settings, db: SqlDatabase) -> Publisher:
    return SqlQueue(db, lease_seconds=settings.lease_seconds)


def _kafka_queue(settings: Settings, db: SqlDatabase) -> Publisher:
    from fruitstream.adapters.kafka import KafkaPublisher, KafkaSettings

    return KafkaPublisher.connect(KafkaSettings.of(settings))


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


def settings_parts(settings: Settings) -> list[FruitstreamSettings]:
    """The core settings and every backend's part (``fruitstream config``, the Spark
    executors' settings file)."""
    from fruitstream.adapters.kafka import KafkaSettings
    from fruitstream.adapters.s3 import S3Settings

    return [
        settings,
        S3Settings.of(settings),
        KafkaSettings.of(settings),
        CallbackSettings.of(settings),
    ]


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
        post=post_json,
    )


def build_service(settings: Settings | None = None, start_workers: bool = True) -> FruitService:
    """The application service over the configured backends and the process-wide classifier;
    ``start_workers`` is its worker policy (see ``service.workers.Workers``)."""
    settings = settings or load_settings()
    return FruitService(
        settings, build_backends(settings), lambda: build_classifier(settings), start_workers
    )


def build_stream(settings: Settings | None = None) -> StreamRunner:
    """What the Spark job's driver and executors run, over the configured backends."""
    settings = settings or load_settings()
    return StreamRunner(build_backends(settings), lambda: build_classifier(settings))
