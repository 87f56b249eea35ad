"""Spark Structured Streaming job: Kafka ``fruit-images`` -> fetch + classify -> results database.

Run with ``fruitstream spark-job`` or ``spark-submit src/fruitstream/entrypoints/spark_job.py``.
Only Spark is here: every executor's Python worker builds one ``StreamRunner`` from settings
(``bootstrap.build_stream``: model loaded once, workers are reused), and classifies each
``mapInPandas`` batch with it (``process_batch``, the embedded worker's code); each executor
upserts its own partition's results (``foreachBatch`` + ``foreachPartition``), so the driver
never holds them, and a batch replayed after a crash rewrites the same rows. The Kafka reader
options come from the Kafka adapter; the driver's heartbeat and repair are the worker's
``Housekeeping``.

Executors get their settings, credentials included, from a file only the job's user can read
(``FRUITSTREAM_SETTINGS_FILE``), never from ``spark.executorEnv``: those end up on the
executor JVM's command line, which every user of the machine sees in ``ps``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import Field, field_validator

from fruitstream.bootstrap import build_stream, kafka_reader_options, settings_parts
from fruitstream.config import (
    SETTINGS_FILE_VARIABLE,
    FruitstreamSettings,
    Settings,
    empty_is_none,
    load_settings,
    part_config,
)
from fruitstream.domain import ResultRow, result_columns
from fruitstream.errors import (
    MissingDependencyError,
    QueueError,
    ResultStoreError,
)
from fruitstream.ports import Delivery
from fruitstream.service.stream import StreamRunner

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("fruitstream.spark")

_SPARK_TYPES = {
    "text": "string",
    "float": "double",
    "bool": "boolean",
    "timestamp": "timestamp",
    "json": "string",
}
RESULT_COLUMNS = [(name, _SPARK_TYPES[kind]) for name, kind in result_columns()]
RESULT_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in RESULT_COLUMNS)


class SparkSettings(FruitstreamSettings):
    """How the job runs on Spark (``FRUITSTREAM_SPARK_*``)."""

    model_config = part_config("FRUITSTREAM_SPARK_")

    master: str = "local[2]"
    checkpoint: str = "data/spark-checkpoint"
    max_offsets_per_trigger: int = Field(default=256, gt=0)
    trigger_seconds: float = Field(default=0.5, ge=0)
    # Tasks per micro-batch: a multiple of the executor cores (Kafka offsets are split).
    min_partitions: int | None = Field(default=None, gt=0)
    jars: str | None = None
    # Messages deleted from Kafka (retention) before the job read them: fail the query loudly
    # (true), or skip them with a warning in the driver's log (false).
    fail_on_data_loss: bool = True
    # A settings file that every Spark executor can read (mode 0600, deployed with the
    # cluster): how executors get their credentials without a command line. Empty: the
    # driver writes one to a private temporary folder, which works where executors share its
    # file system (local mode, a one-machine standalone cluster).
    executor_settings_file: Path | None = None

    _paths = field_validator("executor_settings_file", mode="before")(empty_is_none)


class KafkaRows(Protocol):
    """A pandas frame of Kafka records, as ``mapInPandas`` hands it (``value``: the bytes)."""

    def __getitem__(self, column: str) -> Iterable[bytes]: ...


class SparkRow(Protocol):
    def asDict(self) -> dict[str, object]: ...  # noqa: N802 - PySpark's name


class BatchFrame(Protocol):
    """The micro-batch frame ``foreachBatch`` hands over."""

    def foreachPartition(self, f: Callable[[Iterator[SparkRow]], None]) -> None: ...  # noqa: N802


@cache
def executor_stream() -> StreamRunner:
    """This Python worker's stream runner, built from settings once, then kept (with its
    model): executors need the store, the database and the classifier, not the app's
    service."""
    return build_stream(load_settings())


def classify_partitions(batches: Iterator[KafkaRows]) -> Iterator[object]:
    """``mapInPandas`` body: Kafka rows (key, value) in, result rows out.

    One photo never fails another (``process_batch``); a store that fails every photo of a
    batch raises, the task fails and Spark runs it again.
    """
    import pandas as pd

    stream = executor_stream()
    for frame in batches:
        deliveries = [Delivery(raw=bytes(v), handle=None) for v in frame["value"]]
        out = stream.process(deliveries, can_retry=False)
        for reason in out.skipped:
            print(f"fruitstream spark: {reason}", file=sys.stderr)
        records = [to_record(r) for r in out.rows]
        yield pd.DataFrame.from_records(records, columns=[c for c, _ in RESULT_COLUMNS])


# How long an executor keeps retrying a results database that does not answer (a restart)
# before it fails the task, and Spark's own retries take over.
UPSERT_PATIENCE_SECONDS = 60.0


def upsert_partition(rows: Iterator[SparkRow]) -> int:
    """``foreachPartition`` body: this executor writes its own results (idempotent upsert);
    returns how many."""
    stream = executor_stream()
    batch: list[ResultRow] = []
    written = 0
    for row in rows:
        batch.append(from_spark_row(row))
        if len(batch) >= 256:
            _patient_upsert(stream, batch)
            written += len(batch)
            batch = []
    _patient_upsert(stream, batch)
    return written + len(batch)


def _patient_upsert(stream: StreamRunner, rows: list[ResultRow]) -> None:
    deadline = time.monotonic() + UPSERT_PATIENCE_SECONDS
    delay = 0.5
    while True:
        try:
            stream.save(rows)
            return
        except ResultStoreError as exc:
            if time.monotonic() + delay > deadline:
                raise
            print(f"fruitstream spark: results database: {exc}; retrying", file=sys.stderr)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def executor_settings_file(settings: Settings) -> Path:
    """The file executors read their settings from: the configured one, or one written now
    into a private temporary folder (0700, file 0600), removed when the driver exits."""
    configured = SparkSettings.of(settings).executor_settings_file
    if configured is not None:
        return configured
    folder = Path(tempfile.mkdtemp(prefix="fruitstream-spark-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "executor.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(dotenv_text(settings))
    return path


def dotenv_text(settings: Settings) -> str:
    """Every setting an executor needs, in dotenv syntax (values double-quoted, escaped):
    each backend's part, less the secrets of Kafka, which Spark's own JVM source reads."""
    lines = [line for part in settings_parts(settings) for line in part.dotenv_lines()]
    return "\n".join(lines) + "\n"


def to_record(row: ResultRow) -> dict[str, object]:
    data: dict[str, object] = dict(row.__dict__)
    data["top_k"] = json.dumps(row.top_k)
    for key in ("submitted_at", "processed_at"):
        data[key] = getattr(row, key).astimezone(UTC).replace(tzinfo=None)
    return data


def from_spark_row(row: SparkRow) -> ResultRow:
    data = row.asDict()
    data["top_k"] = json.loads(str(data["top_k"] or "[]"))
    for key in ("submitted_at", "processed_at"):
        value = data[key]
        data[key] = value.replace(tzinfo=UTC) if isinstance(value, datetime) else value
    return ResultRow(**data)  # type: ignore[arg-type]


def spark_session(
    settings: Settings, settings_file: Path | None = None, app_name: str = "fruitstream"
) -> SparkSession:
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise MissingDependencyError("pyspark", "spark") from exc
    # PySpark picks the executors' Python from this variable of the driver's environment.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = SparkSettings.of(settings)
    builder = (
        SparkSession.builder.master(spark.master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        # The executors run this same environment (fruitstream, onnxruntime, the model).
        .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", "4")
        # Belt and braces: nothing secret is set as a Spark property, but should a user add
        # one, the UI and event log show it masked.
        .config(
            "spark.redaction.regex",
            "(?i)secret|password|token|credential|access[._]?key|key[._]?id|database[._]?url|jaas",
        )
        # One core per Python worker: Spark runs as many workers as the executor has cores.
        .config("spark.executorEnv.FRUITSTREAM_THREADS", os.environ.get("FRUITSTREAM_THREADS", "1"))
    )
    if settings_file is not None:
        builder = builder.config(f"spark.executorEnv.{SETTINGS_FILE_VARIABLE}", str(settings_file))
    if spark.jars:
        builder = builder.config("spark.jars", spark.jars)
    return builder.getOrCreate()


def kafka_options(settings: Settings) -> dict[str, str]:
    """The Kafka source's options: the connection (the Kafka adapter's translation) and how
    Spark reads it."""
    spark = SparkSettings.of(settings)
    options = {
        **kafka_reader_options(settings),
        "startingOffsets": "earliest",
        "maxOffsetsPerTrigger": str(spark.max_offsets_per_trigger),
        "failOnDataLoss": str(spark.fail_on_data_loss).lower(),
        # A reused consumer waits out its in-flight fetch before it can seek to the next
        # batch: with the default 500 ms that wait was most of a small batch's latency.
        "kafka.fetch.max.wait.ms": "50",
    }
    if spark.min_partitions:
        # More tasks than topic partitions: Spark splits the offset ranges between them.
        options["minPartitions"] = str(spark.min_partitions)
    return options


def progress_info(progress: Mapping[str, object] | None) -> dict[str, object]:
    """The figures ``status`` and the UI show: rates, last batch, lag behind the topic (from
    ``StreamingQuery.lastProgress``, Spark's JSON)."""
    if not progress:
        return {}

    def rate(key: str) -> float:
        value = progress.get(key)
        return round(float(value), 2) if isinstance(value, int | float | str) else 0.0

    info: dict[str, object] = {
        "batch_id": progress.get("batchId"),
        "input_rate": rate("inputRowsPerSecond"),
        "processed_rate": rate("processedRowsPerSecond"),
        "rows_in_last_batch": progress.get("numInputRows"),
        "last_batch_at": progress.get("timestamp"),
    }
    sources = progress.get("sources")
    for source in sources if isinstance(sources, list) else []:
        metrics = source.get("metrics") if isinstance(source, dict) else None
        behind = metrics.get("maxOffsetsBehindLatest") if isinstance(metrics, dict) else None
        if isinstance(behind, int | float | str):
            info["lag"] = int(float(behind))
    return info


def run(settings: Settings, stop_after_idle: float | None = None) -> None:
    """Start the streaming query and keep it running, with the worker's housekeeping."""
    options = kafka_options(settings)  # ConfigError unless the queue is Kafka
    job = SparkSettings.of(settings)
    stream = build_stream(settings)
    stream.prepare()
    spark = spark_session(settings, executor_settings_file(settings))
    spark.sparkContext.setLogLevel("WARN")
    written = spark.sparkContext.accumulator(0)

    def write_batch(frame: BatchFrame, batch_id: int) -> None:
        # Each executor writes its partition; an upsert makes a replayed batch harmless.
        def write(rows: Iterator[SparkRow]) -> None:
            written.add(upsert_partition(rows))

        frame.foreachPartition(write)
        log.info("batch %d written (%d results so far)", batch_id, written.value)

    source = spark.readStream.format("kafka").options(**options).load()
    results = source.select("key", "value").mapInPandas(classify_partitions, RESULT_SCHEMA)
    query = (
        results.writeStream.foreachBatch(write_batch)
        .option("checkpointLocation", job.checkpoint)
        .trigger(processingTime=f"{job.trigger_seconds} seconds")
        .queryName("fruitstream")
        .start()
    )
    housekeeping = stream.housekeeping(f"spark:{spark.sparkContext.applicationId}")
    me: dict[str, object] = {
        "master": job.master,
        "trigger_s": job.trigger_seconds,
        "ui": spark.sparkContext.uiWebUrl,
        "app_id": spark.sparkContext.applicationId,
    }
    idle_since = time.monotonic()
    info: dict[str, object] = {}
    failure = None
    try:
        while query.isActive:
            try:
                query.awaitTermination(2)
            except Exception:  # the query failed: its exception is read below
                break
            info = {**progress_info(query.lastProgress), **me}
            housekeeping.tick(info)
            status = query.status or {}
            busy = status.get("isTriggerActive") or status.get("isDataAvailable")
            if busy or info.get("rows_in_last_batch") or not query.lastProgress:
                idle_since = time.monotonic()
            if stop_after_idle is not None and time.monotonic() - idle_since > stop_after_idle:
                break
        failure = query.exception()
    finally:
        housekeeping.stopped(info or me)
        query.stop()
        spark.stop()
    if failure is not None:
        # Exit non-zero with the reason; a restart resumes from the checkpoint.
        first = (str(failure).strip().splitlines() or ["unknown error"])[0]
        raise QueueError(f"the streaming query stopped: {first}")


def main() -> None:  # pragma: no cover - spark-submit entry point
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(load_settings())


if __name__ == "__main__":  # pragma: no cover
    main()
