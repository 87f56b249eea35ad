"""The embedded worker: take queued photos in batches, classify them, upsert results, ack."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from fruitstream.classifier import Classifier
from fruitstream.domain import ImageMessage, ResultRow, image_id_of, utcnow
from fruitstream.errors import BackendError, FruitstreamError, MessageError, NotFoundError
from fruitstream.ports import Consumer, Delivery, Heartbeats, ObjectStore, ResultStore

log = logging.getLogger(__name__)

# A message delivered this many times without being acknowledged is recorded as an error.
MAX_ATTEMPTS = 5
# Object-store reads in flight at once per process.
FETCH_THREADS = 8


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


def process_batch(
    deliveries: Sequence[Delivery],
    store: ObjectStore,
    classifier: Classifier,
    top_k: int = 3,
) -> tuple[list[ResultRow], list[str]]:
    """Turn deliveries into result rows; the second list names messages skipped, with why.

    This is the whole per-batch logic, shared by the embedded worker and the Spark job: a bad
    message or image becomes an error row (or a logged skip when it has no image id).
    """
    version = classifier.bundle.model_version
    rows: list[ResultRow] = []
    skipped: list[str] = []
    wanted: list[ImageMessage] = []
    good: list[ImageMessage] = []
    blobs: list[bytes] = []
    for d in deliveries:
        try:
            msg = ImageMessage.from_json(d.raw)
        except MessageError as exc:
            image_id = image_id_of(d.raw)
            if image_id is None:
                skipped.append(f"skipped message without an image id: {exc}")
                continue
            rows.append(_orphan_row(image_id, d.raw, str(exc), version))
            continue
        if d.attempts > MAX_ATTEMPTS:
            rows.append(
                ResultRow.from_outcome(
                    msg,
                    RuntimeError(f"gave up after {d.attempts - 1} attempts to classify this image"),
                    version,
                )
            )
            continue
        wanted.append(msg)
    # Fetched side by side: against S3 each get is a network round trip, mostly waiting.
    for msg, got in zip(wanted, _fetch_pool().map(partial(_fetch, store), wanted), strict=True):
        if isinstance(got, NotFoundError):
            rows.append(ResultRow.from_outcome(msg, got, version))
        else:
            blobs.append(got)
            good.append(msg)
    if good:
        for msg, outcome in zip(good, classifier.classify_many(blobs, top_k), strict=True):
            rows.append(ResultRow.from_outcome(msg, outcome, version))
    return rows, skipped


def _fetch(store: ObjectStore, msg: ImageMessage) -> bytes | NotFoundError:
    try:
        return store.get(msg.object_key)
    except NotFoundError as exc:
        return exc


@cache
def _fetch_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="fetch")


def _orphan_row(image_id: str, raw: bytes, reason: str, version: str) -> ResultRow:
    """An error row for a message that has an image id but breaks the contract otherwise."""
    import json

    try:
        data: dict[str, Any] = json.loads(raw)
    except Exception:
        data = {}
    now = utcnow()
    return ResultRow(
        image_id=image_id,
        session_id=str(data.get("session_id", "")),
        filename=str(data.get("filename", "")),
        object_key=str(data.get("object_key", "")),
        status="error",
        error=reason,
        model_version=version,
        submitted_at=now,
        processed_at=now,
    )


@dataclass
class WorkerStats:
    processed: int = 0
    errors: int = 0
    batches: int = 0
    started: float = 0.0


class Worker:
    """Runs until ``stop`` is set; finishes the batch in hand before it returns."""

    def __init__(
        self,
        consumer: Consumer,
        store: ObjectStore,
        results: ResultStore,
        classifier: Classifier,
        heartbeats: Heartbeats | None = None,
        batch_size: int = 32,
        poll_seconds: float = 0.2,
        top_k: int = 3,
        name: str | None = None,
    ) -> None:
        self.consumer = consumer
        self.store = store
        self.results = results
        self.classifier = classifier
        self.heartbeats = heartbeats
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.top_k = top_k
        self.name = name or worker_id()
        self.stats = WorkerStats(started=time.time())
        self._last_beat = 0.0

    def run_once(self) -> int:
        """Process at most one batch; returns how many messages it handled."""
        deliveries = self.consumer.take(self.batch_size, timeout=self.poll_seconds)
        if not deliveries:
            return 0
        rows, skipped = process_batch(deliveries, self.store, self.classifier, self.top_k)
        for reason in skipped:
            log.warning(reason)
        # Results first, then the ack: a crash in between only means the batch runs again,
        # and the upsert keeps one row per image.
        self.results.upsert(rows)
        self.consumer.ack(deliveries)
        self.stats.processed += len(rows)
        self.stats.errors += sum(r.status == "error" for r in rows)
        self.stats.batches += 1
        return len(deliveries)

    def beat(self, force: bool = False) -> None:
        if self.heartbeats is None or (not force and time.time() - self._last_beat < 1.0):
            return
        self._last_beat = time.time()
        elapsed = max(1e-9, time.time() - self.stats.started)
        try:
            self.heartbeats.beat(
                self.name,
                "worker",
                {
                    "processed": self.stats.processed,
                    "errors": self.stats.errors,
                    "rate": self.stats.processed / elapsed,
                    "pid": os.getpid(),
                },
            )
        except BackendError as exc:
            log.warning("heartbeat failed: %s", exc)

    def run(self, stop: threading.Event, until: Callable[[], bool] | None = None) -> WorkerStats:
        """Loop until ``stop`` is set (or ``until()`` is true); backend errors are retried."""
        backoff = self.poll_seconds
        self.classifier.warm_up_lanes()
        while not stop.is_set():
            try:
                self.beat()
                handled = self.run_once()
                backoff = self.poll_seconds
            except FruitstreamError as exc:
                log.error("worker batch failed, retrying in %.1f s: %s", backoff, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if until is not None and until():
                break
            if not handled:
                stop.wait(0)  # take() already waited poll_seconds
        self.beat(force=True)
        return self.stats
