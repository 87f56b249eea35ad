"""In-memory adapters: the fakes for unit tests of logic (no durability, one process)."""

from __future__ import annotations

import bisect
import posixpath
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fruitstream.domain import (
    BASE_VERSION,
    ImageLimits,
    ImageMessage,
    Label,
    ModelVersion,
    Prediction,
    Progress,
    ResultRow,
    SessionRecord,
    Status,
    TopK,
)
from fruitstream.errors import (
    CursorError,
    ImageError,
    NotFoundError,
    ResultStoreError,
    StorageError,
    UnsupportedImageError,
)
from fruitstream.model.bundle import HEAD_FILE, ModelBundle, PreprocessConfig
from fruitstream.ports import Delivery, Health, KeyClaim

if TYPE_CHECKING:
    from fruitstream.service import FruitService


def _check_key(key: str) -> None:
    """As LocalObjectStore: a key that resolves outside the store is refused."""
    path = posixpath.normpath(key)
    if path.startswith("/") or path == ".." or path.startswith("../"):
        raise StorageError(f"object key {key!r} escapes the store")


class MemoryObjectStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        _check_key(key)
        self.objects[key] = data

    def get(self, key: str) -> bytes:
        _check_key(key)
        try:
            return self.objects[key]
        except KeyError:
            raise NotFoundError(f"object {key} does not exist in the store") from None

    def health(self) -> Health:
        return Health("storage", True, f"memory, {len(self.objects)} objects")


class FlakyStore(MemoryObjectStore):
    """A store that fails reads of chosen keys (or all) with a StorageError."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()
        self.all_down = False
        self.delay = 0.0

    def get(self, key: str) -> bytes:
        time.sleep(self.delay)
        if self.all_down or key in self.failing:
            raise StorageError(f"cannot read {key}: AccessDenied: the test store refused")
        return super().get(key)

    def health(self) -> Health:
        return Health("storage", not self.all_down, "test store")


class MemoryQueue:
    """Publisher and Consumer; ``fail_ids`` makes ``publish`` refuse chosen messages.

    As SqlQueue, messages are taken in publish order, and one handed back (``extend`` with a
    reason) is taken again after its ``seconds``; unlike it, a taken message has no lease
    that runs out: it is the taker's until acked or handed back."""

    def __init__(self) -> None:
        self._items: list[tuple[int, bytes]] = []  # by publish order (seq)
        self._not_before: dict[int, float] = {}  # seq -> when a handed-back one is due
        self._taken: dict[int, bytes] = {}
        self._attempts: dict[int, int] = {}
        self._reasons: dict[int, str] = {}
        self._seq = 0
        self._lock = threading.Condition()  # publish and hand-backs wake a waiting take
        self.fail_ids: set[str] = set()

    def publish(self, messages: Sequence[ImageMessage]) -> dict[str, str]:
        failed = {
            m.image_id: "refused by the test queue" for m in messages if m.image_id in self.fail_ids
        }
        for m in messages:
            if m.image_id not in failed:
                self.publish_raw(m.to_json())
        return failed

    def publish_raw(self, payload: bytes) -> None:
        with self._lock:
            self._seq += 1
            self._items.append((self._seq, payload))
            self._lock.notify_all()

    def take(self, max_messages: int, timeout: float = 0.0) -> list[Delivery]:
        """As SqlQueue: waits up to ``timeout`` for a message when none is due."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                now = time.monotonic()
                due = [i for i in self._items if self._not_before.get(i[0], 0.0) <= now]
                if due or now >= deadline:
                    break
                waits = [t - now for t in self._not_before.values() if t > now]
                self._lock.wait(min([deadline - now, *waits]))
            batch = due[:max_messages]
            taken = {seq for seq, _ in batch}
            self._items = [i for i in self._items if i[0] not in taken]
            self._taken.update(batch)
            for seq, _ in batch:
                self._attempts[seq] = self._attempts.get(seq, 0) + 1
            return [
                Delivery(payload, seq, self._attempts[seq], self._reasons.get(seq))
                for seq, payload in batch
            ]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            for d in deliveries:
                self._taken.pop(d.handle, None)

    def extend(
        self, deliveries: Sequence[Delivery], seconds: float, reason: str | None = None
    ) -> None:
        """No leases here: without a reason nothing changes; a message handed back with a
        reason is queued again, due ``seconds`` from now, in its publish place."""
        if reason is None:
            return
        with self._lock:
            for d in deliveries:
                payload = self._taken.pop(d.handle, None)
                if payload is not None:
                    self._reasons[d.handle] = reason
                    self._not_before[d.handle] = time.monotonic() + seconds
                    bisect.insort(self._items, (d.handle, payload))
            self._lock.notify_all()

    def depth(self) -> int:
        return len(self._items) + len(self._taken)

    def health(self) -> Health:
        return Health("queue", True, f"memory, {self.depth()} waiting", {"depth": self.depth()})


def _unique(key: str, taken: Collection[str], column: str) -> None:
    """As a primary key: a second row with ``key`` is refused."""
    if key in taken:
        raise ResultStoreError(f"results database error: UNIQUE constraint failed: {column}")


class MemoryResultsDatabase:
    """ResultsDatabase in memory: results, sessions, the submit log and heartbeats."""

    def __init__(self) -> None:
        self.rows: dict[str, ResultRow] = {}
        self.session_records: dict[str, SessionRecord] = {}
        # image id -> (message, queued), per session, in submit order
        self.photos: dict[str, dict[str, tuple[ImageMessage, bool]]] = {}
        self.submitting: dict[str, float] = {}  # session id -> last progress (monotonic)
        self.beats: dict[str, tuple[str, datetime, dict[str, Any]]] = {}
        self.claims: dict[str, KeyClaim] = {}  # idempotency key -> its claim
        self.callbacks: dict[str, list[object]] = {}  # session id -> [url, attempts, at, done]
        self.label_rows: list[Label] = []
        self.model_versions: list[ModelVersion] = []
        self.activations: list[str] = []
        self.down = False  # True: every call fails as a database that does not answer
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise ResultStoreError("results database error: connection refused (test)")

    # ResultStore
    def upsert(self, rows: Sequence[ResultRow]) -> None:
        self._check()
        with self._lock:
            for r in {r.image_id: r for r in rows}.values():  # as SQL: last wins in a batch
                old = self.rows.get(r.image_id)
                if old is None or old.status != Status.OK or r.status == Status.OK:
                    self.rows[r.image_id] = r

    def result(self, image_id: str) -> ResultRow:
        self._check()
        try:
            return self.rows[image_id]
        except KeyError:
            raise NotFoundError(f"no result for image {image_id!r}") from None

    def results(
        self, session_id: str, limit: int | None = None, after: str | None = None
    ) -> list[ResultRow]:
        self._check()
        rows = sorted(
            (r for r in self.rows.values() if r.session_id == session_id),
            key=lambda r: (r.filename, r.image_id),
        )
        if after is not None:
            keys = [r.image_id for r in rows]
            if after not in keys:
                raise CursorError(f"cursor {after!r} is not a row of session {session_id!r}")
            rows = rows[keys.index(after) + 1 :]
        return rows if limit is None else rows[:limit]

    def progress(self, session_id: str) -> Progress:
        session = self.get_session(session_id)
        rows = self.results(session_id)
        errors = sum(r.status == Status.ERROR for r in rows)
        return Progress(session_id, session.submitted, len(rows), errors)

    # SessionStore
    def add_session(self, session: SessionRecord, photos: Sequence[ImageMessage] = ()) -> None:
        self._check()
        with self._lock:
            _unique(session.session_id, self.session_records, "sessions.session_id")
            self.session_records[session.session_id] = session
            self.photos[session.session_id] = {m.image_id: (m, False) for m in photos}
            if photos:
                self.submitting[session.session_id] = time.monotonic()

    def get_session(self, session_id: str) -> SessionRecord:
        self._check()
        try:
            return self.session_records[session_id]
        except KeyError:
            raise NotFoundError(f"no session {session_id!r}") from None

    def sessions(
        self, limit: int = 50, before: str | None = None, owner: str | None = None
    ) -> list[SessionRecord]:
        self._check()
        mine = [s for s in self.session_records.values() if owner is None or s.owner == owner]
        newest = sorted(mine, key=lambda s: (s.created_at, s.session_id), reverse=True)
        if before is not None:
            ids = [s.session_id for s in newest]
            if before not in ids:
                raise CursorError(f"cursor {before!r} is not a session")
            newest = newest[ids.index(before) + 1 :]
        return newest[:limit]

    # SubmitLog
    def mark_queued(self, session_id: str, image_ids: Sequence[str], finished: bool) -> None:
        self._check()
        with self._lock:
            photos = self.photos.get(session_id, {})
            for image_id in image_ids:
                if image_id in photos:
                    photos[image_id] = (photos[image_id][0], True)
            if finished:
                self.submitting.pop(session_id, None)
            elif session_id in self.submitting:
                self.submitting[session_id] = time.monotonic()

    def stalled(self, older_than: float) -> dict[str, list[ImageMessage]]:
        self._check()
        now = time.monotonic()
        # As the SQL photo list: no content hash (repair reads the bytes again) nor URL.
        return {
            sid: [
                replace(m, content_sha256="")
                for m, queued in self.photos[sid].values()
                if not queued and m.image_id not in self.rows
            ]
            for sid, since in self.submitting.items()
            if now - since >= older_than
        }

    def photo_list(self, session_id: str) -> list[ImageMessage]:
        self._check()
        # As the SQL photo list: in submit order, no content hash nor URL.
        return [
            replace(m, content_sha256="") for m, _queued in self.photos.get(session_id, {}).values()
        ]

    # IdempotencyKeys
    def claim(self, key: str, fingerprint: str = "") -> KeyClaim | None:
        self._check()
        with self._lock:
            if key in self.claims:
                return self.claims[key]
            self.claims[key] = KeyClaim(fingerprint, datetime.now(UTC))
            return None

    def bind(self, key: str, session_id: str) -> None:
        self._check()
        with self._lock:
            found = self.claims.get(key)
            if found is not None and found.answer is None:
                self.claims[key] = replace(found, session_id=session_id)

    def settle(self, key: str, answer: str) -> None:
        self._check()
        with self._lock:
            found = self.claims.get(key)
            if found is not None:  # as SQL: a key never claimed records nothing
                self.claims[key] = replace(found, answer=answer)

    def release(self, key: str, claimed_before: datetime | None = None) -> None:
        self._check()
        with self._lock:
            found = self.claims.get(key)
            if found is None or found.answer is not None:
                return
            if claimed_before is None or found.claimed_at <= claimed_before:
                del self.claims[key]

    # LabelStore
    def add_label(self, label: Label) -> None:
        self._check()
        _unique(label.label_id, {x.label_id for x in self.label_rows}, "labels.label_id")
        self.label_rows.append(label)

    def labels(self, limit: int = 50, before: str | None = None) -> list[Label]:
        self._check()
        current: dict[str, Label] = {}
        for label in sorted(self.label_rows, key=lambda x: (x.created_at, x.label_id)):
            current[label.content_sha256] = label
        newest = sorted(current.values(), key=lambda x: (x.created_at, x.label_id), reverse=True)
        if before is not None:
            ids = [x.label_id for x in newest]
            if before not in ids:
                raise CursorError(f"cursor {before!r} is not a label")
            newest = newest[ids.index(before) + 1 :]
        return newest[:limit]

    def remove_label(self, label_id: str) -> Label:
        found = [x for x in self.label_rows if x.label_id == label_id]
        if not found:
            raise NotFoundError(f"no label {label_id!r}")
        self.label_rows.remove(found[0])
        return found[0]

    # ModelVersions
    def add_version(self, version: ModelVersion) -> None:
        self._check()
        names = {v.version for v in self.model_versions}
        _unique(version.version, names, "model_versions.version")
        self.model_versions.append(version)

    def versions(self) -> list[ModelVersion]:
        self._check()
        return sorted(self.model_versions, key=lambda v: v.created_at, reverse=True)

    def activate(self, version: str) -> None:
        self._check()
        if version != BASE_VERSION and version not in {v.version for v in self.model_versions}:
            raise NotFoundError(f"no model version {version!r}")
        self.activations.append(version)

    def active_version(self) -> str:
        self._check()
        return self.activations[-1] if self.activations else BASE_VERSION

    # Callbacks
    def add_callback(self, session_id: str, url: str) -> None:
        _unique(session_id, self.callbacks, "callbacks.session_id")
        self.callbacks[session_id] = [url, 0, datetime.now(UTC), False]

    def due_callbacks(self, now: datetime) -> list[tuple[str, str, int]]:
        self._check()
        due = [
            (at, sid, str(url), int(attempts))
            for sid, (url, attempts, at, done) in self.callbacks.items()
            if not done and at <= now  # type: ignore[operator]
        ]
        return [(sid, url, n) for _at, sid, url, n in sorted(due, key=lambda c: c[0])]

    def settle_callback(self, session_id: str, retry_at: datetime | None) -> None:
        entry = self.callbacks.get(session_id)
        if entry is None:  # as SQL: an unknown session's callback is nothing to settle
            return
        entry[1] = int(entry[1]) + 1  # type: ignore[call-overload]
        if retry_at is None:
            entry[3] = True
        else:
            entry[2] = retry_at

    # Heartbeats
    def beat(self, worker_id: str, kind: str, info: dict[str, Any]) -> None:
        self._check()
        self.beats[worker_id] = (kind, datetime.now(UTC), dict(info))

    def latest(self) -> list[tuple[str, str, datetime, dict[str, Any]]]:
        self._check()
        found = [(w, kind, at, info) for w, (kind, at, info) in self.beats.items()]
        return sorted(found, key=lambda b: b[2], reverse=True)

    def health(self) -> Health:
        if self.down:
            return Health("results database", False, "connection refused (test)")
        return Health("results database", True, f"memory, {len(self.rows)} results")


class FakeClassifier:
    """A PhotoClassifier that reads the fruit from the bytes: ``b"fruit:<label>"`` is that
    fruit with confidence 0.9, ``b"fruit:?"`` none of them (0.2), anything else an
    ``UnsupportedImageError`` (``b"fruit:<label>#<n>"``: another photo of it). ``calls``
    counts the photos it was given. An adapted version (``use``) answers with its head over
    ``features``."""

    LABELS = ("apple", "banana", "orange")

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.limits = ImageLimits()
        self.calls = 0
        self.views_embedded = 0  # teaching views made, over all calls
        self.warm_gate: threading.Event | None = None

    # The fake's "pooled features": one dimension per name it can tell apart.
    FEATURES = ("apple", "banana", "orange", "mango", "papaya", "?")
    embed_width = len(FEATURES)

    @classmethod
    def features(cls, data: bytes) -> Any:
        if not data.startswith(b"fruit:"):
            raise UnsupportedImageError("not an image the fake knows (test)")
        name = data.removeprefix(b"fruit:").decode().split("#")[0]
        vec = np.zeros(len(cls.FEATURES), np.float32)
        vec[cls.FEATURES.index(name) if name in cls.FEATURES else -1] = 4.0
        return vec

    def use(self, bundle: ModelBundle) -> None:
        self.bundle = bundle

    def embed(self, images: Sequence[bytes]) -> list[Any]:
        return [v if isinstance(v, Exception) else v[0] for v in self.embed_views(images, 0)]

    def embed_views(self, images: Sequence[bytes], views: int | Sequence[str]) -> list[Any]:
        """The photo's features, then each view's: the same, a little fainter (a crop of a
        photo of one fruit still shows that fruit)."""
        views = views if isinstance(views, int) else len(views)
        out: list[Any] = []
        for data in images:
            try:
                vec = self.features(data)
            except ImageError as exc:
                out.append(exc)
                continue
            out.append(np.stack([vec * (1.0 - 0.02 * i) for i in range(1 + views)]))
            self.views_embedded += views
        return out

    def classify(self, data: bytes, top_k: int = 3) -> Prediction:
        self.calls += 1
        bundle = self.bundle
        if bundle.head is not None:  # an adapted version: its head decides
            probs = bundle.head.probs(self.features(data)[None])[0][: len(bundle.labels)]
            order = [int(i) for i in np.argsort(-probs)[:top_k]]
            top = tuple(TopK(bundle.labels[i], float(probs[i])) for i in order)
            best = top[0]
            return Prediction(
                best.label, best.confidence, best.confidence >= bundle.known_threshold, top
            )
        if not data.startswith(b"fruit:"):
            raise UnsupportedImageError("not an image the fake knows (test)")
        label = data.removeprefix(b"fruit:").decode().split("#")[0]  # "#n": another photo
        known = label in self.LABELS
        first = label if known else self.LABELS[0]
        confidence = 0.9 if known else 0.2
        rest = [x for x in self.LABELS if x != first]
        top = (TopK(first, confidence), *(TopK(x, 0.05) for x in rest))
        return Prediction(first, confidence, known, top[:top_k])

    def classify_many(
        self, images: Sequence[bytes], top_k: int = 3
    ) -> list[Prediction | Exception]:
        outcomes: list[Prediction | Exception] = []
        for data in images:
            try:
                outcomes.append(self.classify(data, top_k))
            except ImageError as exc:
                outcomes.append(exc)
        return outcomes

    def warm_up_lanes(self) -> None:
        if self.warm_gate is not None:  # a slow warm-up, held until the test lets it go
            self.warm_gate.wait(10)


def fake_bundle(folder: Path) -> ModelBundle:
    """A model bundle on disk with everything but real weights: enough for the service to
    read its name, version and preprocessing, never to run it."""
    bundle = ModelBundle(
        name="fake",
        version="0.1",
        labels=FakeClassifier.LABELS,
        preprocess=PreprocessConfig(),
        has_reject_class=False,
        known_threshold=0.5,
        path=folder,
    )
    bundle.save_metadata()
    (folder / "model.onnx").write_bytes(b"not a real graph")
    # Its last layer: each of its fruits from its own dimension, the rest "none of these".
    width = FakeClassifier.embed_width
    weight = np.zeros((len(FakeClassifier.LABELS) + 1, width), np.float32)
    for i in range(len(FakeClassifier.LABELS)):
        weight[i, i] = 1.0
    weight[-1, len(FakeClassifier.LABELS) :] = 1.0
    np.savez(folder / HEAD_FILE, weight=weight, bias=np.zeros(len(weight), np.float32))
    return bundle


@dataclass
class FakeWorld:
    """A FruitService over the in-memory adapters and the fake classifier, with its parts."""

    service: FruitService
    store: MemoryObjectStore
    queue: MemoryQueue
    db: MemoryResultsDatabase
    classifier: FakeClassifier


def fake_world(
    tmp_path: Path, consumes_here: bool = True, start_workers: bool = True, **settings: Any
) -> FakeWorld:
    """The service as every entrypoint gets it, with fakes behind every port. With
    ``consumes_here`` a worker thread of the process can take the queue (the embedded
    default); without, it has its own runner (Kafka and the Spark job). ``start_workers``
    is the service's worker policy (off: a server whose batches wait for a worker
    started elsewhere)."""
    from fruitstream.config import Settings
    from fruitstream.service import Backends, FruitService

    bundle = fake_bundle(tmp_path / "model")
    config = Settings(
        **{
            "data_dir": tmp_path / "data",
            "model_dir": tmp_path / "model",
            "worker_poll_seconds": 0.01,
            "stalled_submit_seconds": 0.2,
            **settings,
        }
    )
    store, queue, db = MemoryObjectStore(), MemoryQueue(), MemoryResultsDatabase()
    classifier = FakeClassifier(bundle)
    consumers = (lambda _owner: queue) if consumes_here else None
    backends = Backends(config, store, queue, db, consumers)
    service = FruitService(config, backends, lambda: classifier, start_workers)
    return FakeWorld(service, store, queue, db, classifier)
