"""The embedded worker: take queued photos in batches, classify them, upsert results, ack."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any

from fruitstream.domain import (
    ImageMessage,
    Prediction,
    ResultRow,
    Status,
    error_row,
    image_id_of,
    utcnow,
)
from fruitstream.errors import (
    FruitstreamError,
    MessageError,
    NotFoundError,
    StorageError,
)
from fruitstream.housekeeping import HOUSEKEEPING_SECONDS, Housekeeping, worker_id
from fruitstream.ports import (
    Consumer,
    Delivery,
    Health,
    Heartbeats,
    ObjectStore,
    PhotoClassifier,
    ResultStore,
)

log = logging.getLogger(__name__)

# A message delivered this many times without being acknowledged is recorded as an error.
# With the retry backoff below that is about three minutes of a store that does not answer.
MAX_ATTEMPTS = 8
# Object-store reads in flight at once per process.
FETCH_THREADS = 8


@dataclass
class BatchOutcome:
    """What one batch of deliveries became.

    ``rows`` are final (classified, or failed for a reason that trying again cannot change);
    ``retry`` are photos whose failure may pass (storage unreachable), each with its reason,
    so that only they go back to the queue; ``skipped`` names messages that had no image id.
    """

    rows: list[ResultRow] = field(default_factory=list)
    retry: list[tuple[Delivery, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def process_batch(
    deliveries: Sequence[Delivery],
    store: ObjectStore,
    classifier: PhotoClassifier,
    top_k: int = 3,
    can_retry: bool = True,
) -> BatchOutcome:
    """Turn deliveries into result rows, one photo never failing another.

    This is the whole per-batch logic, shared by the embedded worker and the Spark job. A bad
    message or image becomes its own error row. A photo the store cannot hand over right now
    is retried alone: put back on the queue when ``can_retry`` (the embedded worker), else
    recorded with the store's reason (Spark, whose offsets only move forward). Only when the
    store itself is down is it an outage, raised for the caller to retry the batch whole.
    """
    version = classifier.bundle.model_version
    out = BatchOutcome()
    wanted: list[tuple[Delivery, ImageMessage]] = []
    for d in deliveries:
        try:
            msg = ImageMessage.from_json(d.raw)
        except MessageError as exc:
            image_id = image_id_of(d.raw)
            if image_id is None:
                out.skipped.append(f"skipped message without an image id: {exc}")
            else:
                out.rows.append(_orphan_row(image_id, d.raw, str(exc), version))
            continue
        if d.attempts > MAX_ATTEMPTS:
            why = d.last_error or "the worker stopped while classifying it each time"
            out.rows.append(
                error_row(msg, f"gave up after {d.attempts - 1} attempts: {why}", version)
            )
            continue
        wanted.append((d, msg))
    # Fetched side by side: against S3 each get is a network round trip, mostly waiting.
    fetched = list(_fetch_pool().map(partial(_fetch, store), [m for _, m in wanted]))
    transient = [f for f in fetched if isinstance(f, _Transient)]
    if transient:
        health = _health(store)
        if not health.ok:
            raise StorageError(f"the object store is down ({health.detail}): {transient[0]}")
    good: list[ImageMessage] = []
    blobs: list[bytes] = []
    for (d, msg), got in zip(wanted, fetched, strict=True):
        if isinstance(got, bytes):
            blobs.append(got)
            good.append(msg)
        elif isinstance(got, _Transient) and can_retry:
            out.retry.append((d, str(got)))
        else:
            out.rows.append(error_row(msg, str(got), version))
    for msg, outcome in zip(good, _classify_each(classifier, blobs, top_k), strict=True):
        out.rows.append(ResultRow.from_outcome(msg, outcome, version))
    return out


class _Transient(str):
    """The reason a photo could not be fetched this time (the store may answer later)."""


def _fetch(store: ObjectStore, msg: ImageMessage) -> bytes | NotFoundError | _Transient:
    try:
        return store.get(msg.object_key)
    except NotFoundError as exc:
        return exc
    except Exception as exc:  # a store error, or an adapter bug: this photo's, not the batch's
        return _Transient(f"cannot read the image from the store: {exc}")


def _health(store: ObjectStore) -> Health:
    try:
        return store.health()
    except Exception as exc:
        return Health("storage", False, str(exc))


def _classify_each(
    classifier: PhotoClassifier, blobs: Sequence[bytes], top_k: int
) -> list[Prediction | Exception]:
    """Outcomes of ``blobs``; should the batch call fail as a whole, each photo on its own."""
    if not blobs:
        return []
    try:
        return list(classifier.classify_many(blobs, top_k))
    except Exception as exc:
        log.warning("batch classification failed (%s); classifying one by one", exc)
    outcomes: list[Prediction | Exception] = []
    for blob in blobs:
        try:
            outcomes.append(classifier.classify(blob, top_k))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


@cache
def _fetch_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="fetch")


def _orphan_row(image_id: str, raw: bytes, reason: str, version: str) -> ResultRow:
    """The error row of a message that has an image id but breaks the contract otherwise."""
    try:
        data: Any = json.loads(raw)
    except Exception:
        data = {}
    if not isinstance(data, dict):
        data = {}
    msg = ImageMessage(
        image_id=image_id,
        session_id=str(data.get("session_id", "")),
        object_key=str(data.get("object_key", "")),
        filename=str(data.get("filename", "")),
        content_sha256="",
        submitted_at=utcnow(),
    )
    return error_row(msg, reason, version)


@dataclass
class WorkerStats:
    processed: int = 0
    errors: int = 0
    batches: int = 0
    started: float = 0.0


class _LeaseKeeper:
    """Renews the leases of the batch in hand while it is worked on, from its own thread.

    Leases can then be short, so that the photos of a killed worker go to the next one within
    seconds, while a slow batch is never taken by a second worker meanwhile.
    """

    def __init__(self, consumer: Consumer, deliveries: Sequence[Delivery], lease: float) -> None:
        self._consumer = consumer
        self._deliveries = deliveries
        self._lease = lease
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self._lease / 3):
            try:
                self._consumer.extend(self._deliveries, self._lease)
            except FruitstreamError as exc:
                log.warning("cannot renew the leases of the batch in hand: %s", exc)


class Worker:
    """Runs until ``stop`` is set; finishes the batch in hand before it returns."""

    def __init__(
        self,
        consumer: Consumer,
        store: ObjectStore,
        results: ResultStore,
        classifier: PhotoClassifier,
        heartbeats: Heartbeats | None = None,
        batch_size: int = 32,
        poll_seconds: float = 0.2,
        top_k: int = 3,
        name: str | None = None,
        lease_seconds: float = 10.0,
        retry_seconds: float = 2.0,
        housekeeping: Callable[[], object] | None = None,
        housekeeping_seconds: float = HOUSEKEEPING_SECONDS,
        before_batch: Callable[[], object] | None = None,
    ) -> None:
        self.consumer = consumer
        # Called with a batch in hand, before it is classified: the live model version is
        # followed there, so that a switch applies from the next batch on.
        self.before_batch = before_batch
        self.store = store
        self.results = results
        self.classifier = classifier
        self.heartbeats = heartbeats
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.top_k = top_k
        self.name = name or worker_id()
        self.lease_seconds = lease_seconds
        self.retry_seconds = retry_seconds
        # Heartbeat, and at start and every ``housekeeping_seconds`` the chores (finishing
        # submits that crashed): the same runner as the Spark job's.
        self.housekeeping = Housekeeping(
            heartbeats, self.name, "worker", housekeeping, housekeeping_seconds
        )
        self.stats = WorkerStats(started=time.time())

    def run_once(self) -> int:
        """Process at most one batch; returns how many messages it handled."""
        deliveries = self.consumer.take(self.batch_size, timeout=self.poll_seconds)
        if not deliveries:
            return 0
        if self.before_batch is not None:
            self.before_batch()
        with _LeaseKeeper(self.consumer, deliveries, self.lease_seconds):
            try:
                out = process_batch(deliveries, self.store, self.classifier, self.top_k)
            except StorageError as exc:  # the store is down: the whole batch waits for it
                self.consumer.extend(deliveries, self._retry_delay(deliveries[0]), str(exc))
                raise
            for reason in out.skipped:
                log.warning(reason)
            # Results first, then the ack: a crash in between only means the batch runs
            # again, and the upsert keeps one row per image.
            self.results.upsert(out.rows)
        retry = {id(d) for d, _ in out.retry}
        self.consumer.ack([d for d in deliveries if id(d) not in retry])
        for d, reason in out.retry:
            log.warning("will retry a photo: %s", reason)
            self.consumer.extend([d], self._retry_delay(d), reason)
        self.stats.processed += len(out.rows)
        self.stats.errors += sum(r.status == Status.ERROR for r in out.rows)
        self.stats.batches += 1
        return len(deliveries)

    def _retry_delay(self, d: Delivery) -> float:
        return float(min(60.0, self.retry_seconds * 2 ** (d.attempts - 1)))

    def info(self) -> dict[str, object]:
        """What the heartbeat says of this worker: its counts and its rate."""
        elapsed = max(1e-9, time.time() - self.stats.started)
        return {
            "processed": self.stats.processed,
            "errors": self.stats.errors,
            "rate": self.stats.processed / elapsed,
        }

    def announce(self) -> None:
        """The first heartbeat, before the warm-up: from the moment it exists the worker is
        alive, so a health check right after it is started does not report no worker. Not
        forced: the service announces before starting the thread and ``run`` again, and the
        second, within a beat period, writes nothing."""
        self.housekeeping.beat(self.info())

    def run(self, stop: threading.Event, until: Callable[[], bool] | None = None) -> WorkerStats:
        """Loop until ``stop`` is set (or ``until()`` is true); failures are retried.

        Nothing one batch does can end the loop: a backend error, or any other, is logged and
        retried with backoff (each message counts its attempts, so a photo that always fails
        ends as an error row). On the way out the heartbeat says "stopped".
        """
        backoff = self.poll_seconds
        self.announce()
        self.classifier.warm_up_lanes()
        try:
            while not stop.is_set():
                try:
                    self.housekeeping.tick(self.info())
                    handled = self.run_once()
                    backoff = self.poll_seconds
                except Exception as exc:
                    log.error("worker batch failed, retrying in %.1f s: %s", backoff, exc)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if until is not None and until():
                    break
                if not handled:
                    stop.wait(0)  # take() already waited poll_seconds
        finally:
            self.housekeeping.stopped(self.info())
        return self.stats
