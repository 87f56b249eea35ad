"""Spark Structured Streaming job: Kafka ``fruit-images`` -> fetch + classify -> results database.

Run with ``fruitstream spark-job`` or ``spark-submit src/fruitstream/spark_job.py``. The model is
loaded once per Python worker (module-level cache, workers are reused) and photos are
classified in batches by ``mapInPandas``; results are upserted in ``foreachBatch``, so a
batch replayed after a crash rewrites the same rows instead of adding new ones.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fruitstream.config import Settings, load_settings
from fruitstream.domain import ResultRow
from fruitstream.errors import MissingDependencyError
from fruitstream.ports import Delivery

log = logging.getLogger("fruitstream.spark")

RESULT_COLUMNS = [
    ("image_id", "string"), ("session_id", "string"), ("filename", "string"),
    ("object_key", "string"), ("label", "string"), ("confidence", "double"),
    ("known", "boolean"), ("top_k", "string"), ("status", "string"), ("error", "string"),
    ("model_version", "string"), ("submitted_at", "timestamp"), ("processed_at", "timestamp"),
    ("latency_ms", "double"),
]  # fmt: skip
RESULT_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in RESULT_COLUMNS)

# Settings the executors need (storage and model), never the database or Kafka secrets.
_EXECUTOR_SKIP = {"FRUITSTREAM_DATABASE_URL", "FRUITSTREAM_KAFKA_SASL_PASSWORD"}

_worker_state: dict[str, Any] = {}


def _executor_services() -> tuple[Any, Any, int]:
    """Object store and classifier of this Python worker, built on first use, then kept."""
    if not _worker_state:
        from fruitstream.bootstrap import build_backends, build_classifier

        settings = load_settings()
        _worker_state["store"] = build_backends(settings).store
        _worker_state["classifier"] = build_classifier(settings)
        _worker_state["top_k"] = settings.top_k
    return _worker_state["store"], _worker_state["classifier"], _worker_state["top_k"]


def classify_partitions(batches: Iterator[Any]) -> Iterator[Any]:
    """``mapInPandas`` body: Kafka rows (key, value) in, result rows out."""
    import pandas as pd

    from fruitstream.worker import process_batch

    store, classifier, top_k = _executor_services()
    for frame in batches:
        deliveries = [Delivery(raw=bytes(v), handle=None) for v in frame["value"]]
        rows, skipped = process_batch(deliveries, store, classifier, top_k)
        for reason in skipped:
            print(f"fruitstream spark: {reason}", file=sys.stderr)
        records = [to_record(r) for r in rows]
        yield pd.DataFrame.from_records(records, columns=[c for c, _ in RESULT_COLUMNS])


def to_record(row: ResultRow) -> dict[str, Any]:
    data = dict(row.__dict__)
    data["top_k"] = json.dumps(row.top_k)
    for key in ("submitted_at", "processed_at"):
        data[key] = data[key].astimezone(UTC).replace(tzinfo=None)
    return data


def from_spark_row(row: Any) -> ResultRow:
    data = row.asDict()
    data["top_k"] = json.loads(data["top_k"] or "[]")
    for key in ("submitted_at", "processed_at"):
        value = data[key]
        data[key] = value.replace(tzinfo=UTC) if isinstance(value, datetime) else value
    return ResultRow(**data)


def spark_session(settings: Settings, app_name: str = "fruitstream") -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise MissingDependencyError("pyspark", "spark") from exc
    # PySpark picks the executors' Python from this variable of the driver's environment.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(settings.spark_master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        # The executors run this same environment (fruitstream, onnxruntime, the model).
        .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.redaction.regex", "(?i)secret|password|token|access[.]?key|database_url")
        .config("spark.executorEnv.FRUITSTREAM_THREADS", os.environ.get("FRUITSTREAM_THREADS", "1"))
    )
    if settings.spark_jars:
        builder = builder.config("spark.jars", settings.spark_jars)
    for key, value in os.environ.items():
        if (
            key.startswith("FRUITSTREAM_")
            and key not in _EXECUTOR_SKIP
            and key != "FRUITSTREAM_THREADS"
        ):
            builder = builder.config(f"spark.executorEnv.{key}", value)
    return builder.getOrCreate()


def kafka_options(settings: Settings) -> dict[str, str]:
    options = {
        "kafka.bootstrap.servers": settings.kafka_bootstrap_servers,
        "subscribe": settings.kafka_topic,
        "startingOffsets": "earliest",
        "maxOffsetsPerTrigger": str(settings.spark_max_offsets_per_trigger),
        "failOnDataLoss": "false",
        # A reused consumer waits out its in-flight fetch before it can seek to the next
        # batch: with the default 500 ms that wait was most of a small batch's latency.
        "kafka.fetch.max.wait.ms": "50",
        "kafka.security.protocol": settings.kafka_security_protocol,
    }
    if settings.spark_min_partitions:
        # More tasks than topic partitions: Spark splits the offset ranges between them.
        options["minPartitions"] = str(settings.spark_min_partitions)
    if settings.kafka_sasl_mechanism and settings.kafka_sasl_password is not None:
        options["kafka.sasl.mechanism"] = settings.kafka_sasl_mechanism
        module = (
            "org.apache.kafka.common.security.scram.ScramLoginModule"
            if settings.kafka_sasl_mechanism.startswith("SCRAM")
            else "org.apache.kafka.common.security.plain.PlainLoginModule"
        )
        options["kafka.sasl.jaas.config"] = (
            f'{module} required username="{settings.kafka_sasl_username}" '
            f'password="{settings.kafka_sasl_password.get_secret_value()}";'
        )
    return options


def progress_info(progress: dict[str, Any] | None) -> dict[str, Any]:
    """The figures ``status`` and the UI show: rates, last batch, lag behind the topic."""
    if not progress:
        return {}
    info: dict[str, Any] = {
        "batch_id": progress.get("batchId"),
        "input_rate": round(float(progress.get("inputRowsPerSecond") or 0.0), 2),
        "processed_rate": round(float(progress.get("processedRowsPerSecond") or 0.0), 2),
        "rows_in_last_batch": progress.get("numInputRows"),
        "last_batch_at": progress.get("timestamp"),
    }
    for source in progress.get("sources") or []:
        metrics = source.get("metrics") or {}
        if "maxOffsetsBehindLatest" in metrics:
            info["lag"] = int(float(metrics["maxOffsetsBehindLatest"]))
    return info


def run(settings: Settings, stop_after_idle: float | None = None) -> None:
    """Start the streaming query and keep it running, recording progress as a heartbeat."""
    from fruitstream.adapters.kafka import KafkaPublisher
    from fruitstream.adapters.sql import SqlDatabase

    db = SqlDatabase.from_url(settings.sqlalchemy_url)
    db.create_schema()
    KafkaPublisher.from_settings(settings).ensure_topic()
    spark = spark_session(settings)
    spark.sparkContext.setLogLevel("WARN")

    def write_batch(frame: Any, batch_id: int) -> None:
        # Bounded by maxOffsetsPerTrigger; an upsert makes a replayed batch harmless.
        rows = [from_spark_row(r) for r in frame.collect()]
        db.upsert(rows)
        log.info("batch %d: %d results written", batch_id, len(rows))

    source = spark.readStream.format("kafka").options(**kafka_options(settings)).load()
    results = source.select("key", "value").mapInPandas(classify_partitions, RESULT_SCHEMA)
    query = (
        results.writeStream.foreachBatch(write_batch)
        .option("checkpointLocation", settings.spark_checkpoint)
        .trigger(processingTime=f"{settings.spark_trigger_seconds} seconds")
        .queryName("fruitstream")
        .start()
    )
    name = f"spark:{spark.sparkContext.applicationId}"
    idle_since = time.monotonic()
    try:
        while query.isActive:
            query.awaitTermination(2)
            info = progress_info(query.lastProgress)
            db.beat(name, "spark", {**info, "master": settings.spark_master})
            status = query.status or {}
            busy = status.get("isTriggerActive") or status.get("isDataAvailable")
            if busy or info.get("rows_in_last_batch") or not info:
                idle_since = time.monotonic()
            if stop_after_idle is not None and time.monotonic() - idle_since > stop_after_idle:
                break
    finally:
        query.stop()
        spark.stop()


def main() -> None:  # pragma: no cover - spark-submit entry point
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(load_settings())


if __name__ == "__main__":  # pragma: no cover
    main()
