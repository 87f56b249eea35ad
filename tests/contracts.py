"""The ports' contract suite: the same assertions for every adapter of a port and its fake.

Each ``*Contract`` class holds the behaviour ``fruitstream.ports`` documents for one port; a
test module runs it by subclassing it (``class TestResultStore(ResultStoreContract)``) next to
the fixture that gives the implementations: ``store`` (an ObjectStore), ``queue`` (a
:class:`QueueUnderTest`) or ``database`` (a ResultsDatabase). ``tests/unit/test_contracts.py``
runs them on the real adapters over a SQLite file and a local folder and on the fakes of
``tests/fakes.py``; ``tests/integration/test_contracts_postgres.py`` runs the SQL ones on
PostgreSQL. A fake that answers otherwise than the real adapter fails here, not in the tests
that trust it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fruitstream.domain import (
    BASE_VERSION,
    ImageMessage,
    Label,
    ModelVersion,
    Prediction,
    ResultRow,
    SessionRecord,
    Status,
    TopK,
    error_row,
    new_id,
    utcnow,
)
from fruitstream.errors import CursorError, NotFoundError, ResultStoreError, StorageError
from fruitstream.ports import Consumer, ObjectStore, Publisher, ResultsDatabase

# --- building blocks ----------------------------------------------------------------------


def message(session_id: str = "s", filename: str = "f.jpg") -> ImageMessage:
    return ImageMessage(new_id(), session_id, f"k/{filename}", filename, "0" * 64, utcnow())


def ok_row(msg: ImageMessage, label: str = "apple", model_version: str = "m:1") -> ResultRow:
    top = (TopK(label, 0.75), TopK("pear", 0.125), TopK("kiwi", 0.0625))
    return ResultRow.from_outcome(msg, Prediction(label, 0.75, True, top), model_version)


def session(session_id: str | None = None, **fields: Any) -> SessionRecord:
    return SessionRecord(session_id or new_id(), fields.pop("created_at", utcnow()), 1, **fields)


def label(content: str, text: str, at: datetime, label_id: str | None = None) -> Label:
    return Label(
        label_id=label_id or new_id(),
        content_sha256=content,
        object_key=f"labels/{content}.jpg",
        label=text,
        model_label="apple",
        model_known=True,
        model_version="fruits15:3.2",
        source="app",
        created_at=at,
        image_id=None,
    )


def version(name: str, at: datetime) -> ModelVersion:
    return ModelVersion(
        version=name,
        parent=BASE_VERSION,
        base_model="fruits15:3.2",
        labels_used=12,
        classes=("apple", "mango"),
        method="mix",
        figures={"wild_val": {"base": 0.79, "this": 0.8}},
        refused=(),
        seconds=1.5,
        created_at=at,
    )


def fill(db: ResultsDatabase, sessions: int, rows: int) -> list[str]:
    """``sessions`` sessions of ``rows`` error rows each; returns their ids, oldest first."""
    now = utcnow()
    ids = []
    for i in range(sessions):
        sid = new_id()
        ids.append(sid)
        # Two sessions share a creation time: the id breaks the tie, no row is lost.
        created = now + timedelta(seconds=i // 2)
        db.add_session(SessionRecord(sid, created, rows))
        names = [f"{n % 3}.jpg" for n in range(rows)]  # repeated names: the id orders them
        msgs = [ImageMessage(new_id(), sid, "k", name, "", created) for name in names]
        db.upsert([ResultRow.from_outcome(m, RuntimeError("x"), "m:1") for m in msgs])
    return ids


@contextmanager
def raises_results_error() -> Iterator[None]:
    """What a database refusing a write raises: ResultStoreError (a key taken twice)."""
    with pytest.raises(ResultStoreError):
        yield


# --- ObjectStore --------------------------------------------------------------------------


class ObjectStoreContract:
    """``put`` then ``get`` gives the bytes back; ``get`` of a key never put is NotFoundError."""

    def test_what_is_put_is_got_back(self, store: ObjectStore) -> None:
        store.put("uploads/20260101/s/a.jpg", b"\xff\xd8 photo", "image/jpeg")
        store.put("uploads/20260101/s/empty.jpg", b"")
        assert store.get("uploads/20260101/s/a.jpg") == b"\xff\xd8 photo"
        assert store.get("uploads/20260101/s/empty.jpg") == b""

    def test_a_second_put_replaces_the_object(self, store: ObjectStore) -> None:
        store.put("models/t1/head.npz", b"first")
        store.put("models/t1/head.npz", b"second")
        assert store.get("models/t1/head.npz") == b"second"

    def test_an_unknown_key_is_not_found(self, store: ObjectStore) -> None:
        store.put("uploads/a.jpg", b"a")
        with pytest.raises(NotFoundError, match="does not exist"):
            store.get("uploads/b.jpg")

    def test_a_key_that_escapes_the_store_is_refused(self, store: ObjectStore) -> None:
        for key in ("../outside.jpg", "uploads/../../outside.jpg", "/etc/outside.jpg"):
            with pytest.raises(StorageError, match="escapes the store"):
                store.put(key, b"x")
            with pytest.raises(StorageError, match="escapes the store"):
                store.get(key)

    def test_health_says_storage_is_up(self, store: ObjectStore) -> None:
        health = store.health()
        assert health.name == "storage" and health.ok and health.detail


# --- Publisher and Consumer ---------------------------------------------------------------


@dataclass
class QueueUnderTest:
    """A queue's publisher, its consumers by owner (one worker each) and its depth."""

    publisher: Publisher
    consumer: Callable[[str], Consumer]
    depth: Callable[[], int]


class QueueContract:
    """Published messages are taken in order, each leased to one taker until it acks them or
    hands them back (``extend`` with a reason) for a later attempt."""

    def test_published_messages_are_taken_in_order_once(self, queue: QueueUnderTest) -> None:
        msgs = [message(filename=f"{i}.jpg") for i in range(5)]
        assert queue.publisher.publish(msgs) == {}
        assert queue.publisher.publish([]) == {}
        a, b = queue.consumer("a"), queue.consumer("b")
        first = a.take(3, 0.0)
        rest = b.take(10, 0.0)
        assert [ImageMessage.from_json(d.raw) for d in first + rest] == msgs
        assert [(d.attempts, d.last_error) for d in first + rest] == [(1, None)] * 5
        assert a.take(10, 0.0) == [] and b.take(10, 0.0) == []  # leased: not handed out twice
        assert queue.depth() == 5  # taken is not gone: only an ack removes

    def test_an_empty_queue_gives_nothing(self, queue: QueueUnderTest) -> None:
        assert queue.consumer("a").take(10, 0.0) == []
        assert queue.depth() == 0

    def test_take_waits_its_timeout_for_a_message(self, queue: QueueUnderTest) -> None:
        """A worker's loop relies on it: a take that returned at once would spin the CPU."""
        started = time.monotonic()
        assert queue.consumer("a").take(10, 0.3) == []
        assert time.monotonic() - started >= 0.25

    def test_a_waiting_take_gets_a_message_published_meanwhile(self, queue: QueueUnderTest) -> None:
        later = threading.Timer(0.1, lambda: queue.publisher.publish([message()]))
        later.start()
        started = time.monotonic()
        taken = queue.consumer("a").take(10, 5.0)
        later.join()
        assert len(taken) == 1 and time.monotonic() - started < 4.0

    def test_acked_messages_are_gone(self, queue: QueueUnderTest) -> None:
        queue.publisher.publish([message(filename=f"{i}.jpg") for i in range(3)])
        worker = queue.consumer("a")
        taken = worker.take(2, 0.0)
        worker.ack(taken)
        worker.ack(taken)  # twice: nothing more happens
        worker.ack([])
        assert queue.depth() == 1
        [last] = worker.take(10, 0.0)
        worker.ack([last])
        assert queue.depth() == 0 and worker.take(10, 0.0) == []

    def test_extending_keeps_the_lease(self, queue: QueueUnderTest) -> None:
        queue.publisher.publish([message()])
        worker = queue.consumer("a")
        taken = worker.take(1, 0.0)
        worker.extend(taken, 30.0)  # still working on it
        worker.extend([], 30.0)
        assert queue.consumer("b").take(10, 0.0) == [] and worker.take(10, 0.0) == []
        worker.ack(taken)
        assert queue.depth() == 0

    def test_a_message_handed_back_comes_again_with_its_reason(self, queue: QueueUnderTest) -> None:
        msg = message()
        queue.publisher.publish([msg])
        worker = queue.consumer("a")
        [first] = worker.take(1, 0.0)
        worker.extend([first], 0.0, "AccessDenied: the store refused")
        time.sleep(0.01)
        [again] = queue.consumer("b").take(10, 0.0)
        assert ImageMessage.from_json(again.raw) == msg
        assert (again.attempts, again.last_error) == (2, "AccessDenied: the store refused")

    def test_a_message_handed_back_for_later_waits(self, queue: QueueUnderTest) -> None:
        queue.publisher.publish([message(filename="late.jpg"), message(filename="now.jpg")])
        worker = queue.consumer("a")
        late, now = worker.take(2, 0.0)
        worker.extend([late], 30.0, "try again in 30 s")
        worker.ack([now])
        assert queue.consumer("b").take(10, 0.0) == []
        assert queue.depth() == 1

    def test_health_says_the_queue_is_up_with_its_depth(self, queue: QueueUnderTest) -> None:
        queue.publisher.publish([message(), message()])
        health = queue.publisher.health()
        assert health.name == "queue" and health.ok
        assert health.extra == {"depth": 2}


# --- ResultStore ----------------------------------------------------------------------------


class ResultStoreContract:
    """One row per image (``upsert``), a classified photo stays classified, pages by cursor."""

    def test_a_row_reads_back_as_it_was_written(self, database: ResultsDatabase) -> None:
        ok = ok_row(message("s1", "é photo.jpg"))
        failed = error_row(message("s1", "b.jpg"), "not an image", "m:1")
        database.upsert([ok, failed])
        assert database.result(ok.image_id) == ok
        assert database.result(failed.image_id) == failed
        assert database.results("s1") == [failed, ok]  # by file name
        assert database.result(ok.image_id).processed_at.tzinfo is not None

    def test_upsert_keeps_one_row_per_image(self, database: ResultsDatabase) -> None:
        db = database
        msg = ImageMessage(str(uuid.uuid4()), "s1", "k", "f.jpg", "0", utcnow())
        first = ResultRow.from_outcome(msg, RuntimeError("boom"), "m:1")
        second = ResultRow.from_outcome(msg, RuntimeError("again"), "m:2")
        db.upsert([first])
        db.upsert([second, second])
        rows = db.results("s1")
        assert len(rows) == 1 and rows[0].error == "again" and rows[0].model_version == "m:2"

    def test_the_last_row_of_an_upsert_wins(self, database: ResultsDatabase) -> None:
        msg = message("s1")
        database.upsert([error_row(msg, "boom", "m:1")])
        database.upsert([error_row(msg, "again", "m:2"), error_row(msg, "last", "m:3")])
        database.upsert([])
        [row] = database.results("s1")
        assert (row.error, row.model_version) == ("last", "m:3")  # last in the batch

    def test_an_error_row_never_replaces_an_ok_row(self, database: ResultsDatabase) -> None:
        db = database
        msg = ImageMessage(str(uuid.uuid4()), "s2", "k", "f.jpg", "0", utcnow())
        ok = ResultRow(
            image_id=msg.image_id,
            session_id="s2",
            filename="f.jpg",
            object_key="k",
            label="apple",
            confidence=0.9,
            known=True,
            status="ok",
            model_version="m:1",
            submitted_at=utcnow(),
            processed_at=utcnow(),
        )
        db.upsert([error_row(msg, "first attempt failed", "m:1")])
        db.upsert([ok])
        db.upsert([error_row(msg, "gave up after 8 attempts", "m:1")])
        [row] = db.results("s2")
        assert (row.status, row.label) == ("ok", "apple")

    def test_a_later_ok_row_replaces_an_ok_row(self, database: ResultsDatabase) -> None:
        msg = message("s2")
        database.upsert([ok_row(msg)])
        database.upsert([error_row(msg, "a late error", "m:1")])
        assert database.result(msg.image_id).status == Status.OK
        database.upsert([ok_row(msg, label="pear", model_version="m:2")])
        assert database.result(msg.image_id).label == "pear"

    def test_any_filename_is_stored_whole(self, database: ResultsDatabase) -> None:
        db = database
        name = "é" * 40 + "x" * 400 + ".jpg"
        msg = ImageMessage(str(uuid.uuid4()), "s3", "k", name, "0", utcnow())
        db.upsert([error_row(msg, "why", "m:1")])
        assert db.results("s3")[0].filename == name

    def test_an_unknown_image_is_not_found(self, database: ResultsDatabase) -> None:
        with pytest.raises(NotFoundError, match="no result"):
            database.result(new_id())
        assert database.results("no-such-session") == []

    def test_rows_come_in_file_name_order_a_page_at_a_time(self, database: ResultsDatabase) -> None:
        msgs = [message("s3", name) for name in ("c.jpg", "a.jpg", "b.jpg", "a.jpg")]
        database.upsert([error_row(m, "x", "m:1") for m in msgs])
        database.upsert([error_row(message("other", "a.jpg"), "x", "m:1")])
        rows = database.results("s3")
        assert [(r.filename, r.image_id) for r in rows] == sorted(
            (m.filename, m.image_id) for m in msgs
        )
        assert database.results("s3", limit=2) == rows[:2]
        assert database.results("s3", limit=2, after=rows[1].image_id) == rows[2:]
        assert database.results("s3", after=rows[-1].image_id) == []

    def test_a_cursor_of_another_session_is_refused(self, database: ResultsDatabase) -> None:
        mine, theirs = message("mine"), message("theirs")
        database.upsert([error_row(mine, "x", "m:1"), error_row(theirs, "x", "m:1")])
        with pytest.raises(CursorError):
            database.results("mine", after=theirs.image_id)
        with pytest.raises(CursorError):
            database.results("mine", limit=2, after="not-a-row")

    def test_progress_counts_rows_and_errors_of_the_submitted(
        self, database: ResultsDatabase
    ) -> None:
        database.add_session(SessionRecord("p1", utcnow(), 3))
        assert database.progress("p1").done == 0 and not database.progress("p1").complete
        database.upsert([ok_row(message("p1")), error_row(message("p1"), "x", "m:1")])
        progress = database.progress("p1")
        assert (progress.submitted, progress.done, progress.errors) == (3, 2, 1)
        database.upsert([ok_row(message("p1"))])
        assert database.progress("p1").complete
        with pytest.raises(NotFoundError, match="no session"):
            database.progress("no-such-session")

    def test_health_says_the_database_is_up(self, database: ResultsDatabase) -> None:
        health = database.health()
        assert health.name == "results database" and health.ok


# --- SessionStore and SubmitLog -------------------------------------------------------------


class SessionStoreContract:
    """Sessions newest first, paged by the last id of a page, per owner."""

    def test_a_session_reads_back_as_it_was_written(self, database: ResultsDatabase) -> None:
        record = session(name="holiday photos", owner="token-a")
        database.add_session(record)
        assert database.get_session(record.session_id) == record

    def test_unknown_session_is_not_found(self, database: ResultsDatabase) -> None:
        db = database
        with pytest.raises(NotFoundError, match="no session"):
            db.get_session("nope")

    def test_a_session_id_is_recorded_once(self, database: ResultsDatabase) -> None:
        record = session()
        database.add_session(record)
        with raises_results_error():
            database.add_session(replace(record, name="again"))
        assert database.get_session(record.session_id) == record

    def test_every_session_and_row_once_page_by_page(self, database: ResultsDatabase) -> None:
        db = database
        ids = fill(db, sessions=7, rows=7)
        seen: list[str] = []
        before = None
        while True:
            page = db.sessions(limit=3, before=before)
            seen += [s.session_id for s in page]
            if len(page) < 3:
                break
            before = page[-1].session_id
        assert sorted(seen) == sorted(ids) and len(seen) == 7
        assert seen == [s.session_id for s in db.sessions(limit=100)]  # same order as unpaged
        rows: list[ResultRow] = []
        after = None
        while True:
            chunk = db.results(ids[0], limit=2, after=after)
            rows += chunk
            if len(chunk) < 2:
                break
            after = chunk[-1].image_id
        assert [r.image_id for r in rows] == [r.image_id for r in db.results(ids[0])]
        assert len({r.image_id for r in rows}) == 7
        assert [r.filename for r in rows] == sorted(r.filename for r in rows)
        with pytest.raises(CursorError):
            db.results(ids[0], limit=2, after=rows[0].image_id + "x")
        with pytest.raises(CursorError):
            db.sessions(limit=2, before="no-such-session")

    def test_sessions_are_newest_first(self, database: ResultsDatabase) -> None:
        now = utcnow()
        old, new = session(created_at=now - timedelta(hours=1)), session(created_at=now)
        database.add_session(new)
        database.add_session(old)
        assert database.sessions() == [new, old]
        assert database.sessions(limit=1) == [new]
        assert database.sessions(before=new.session_id) == [old]
        assert database.sessions(before=old.session_id) == []

    def test_sessions_of_one_owner(self, database: ResultsDatabase) -> None:
        db = database
        now = utcnow()
        for owner in ("a", "b", "a", ""):
            db.add_session(SessionRecord(new_id(), now, 1, owner=owner))
        assert len(db.sessions(owner="a")) == 2 and len(db.sessions()) == 4
        assert {s.owner for s in db.sessions(owner="b")} == {"b"}


class SubmitLogContract:
    """A submit's photo list: the photos neither queued nor settled of a submit that made no
    progress for ``older_than`` seconds are what ``repair`` finishes."""

    def _submitting(self, db: ResultsDatabase, n: int) -> tuple[str, list[ImageMessage]]:
        record = SessionRecord(new_id(), utcnow(), n)
        photos = [message(record.session_id, f"{i}.jpg") for i in range(n)]
        db.add_session(record, photos)
        return record.session_id, photos

    @staticmethod
    def _ids(found: dict[str, list[ImageMessage]]) -> dict[str, set[str]]:
        return {sid: {m.image_id for m in photos} for sid, photos in found.items()}

    def test_a_submit_that_stopped_is_stalled(self, database: ResultsDatabase) -> None:
        sid, photos = self._submitting(database, 3)
        database.add_session(session())  # no photo list: nothing to finish
        time.sleep(0.01)
        assert database.stalled(older_than=60) == {}
        found = database.stalled(older_than=0)
        assert self._ids(found) == {sid: {m.image_id for m in photos}}
        # What repair needs to finish each photo (it reads the bytes again for their hash).
        got = {m.image_id: m for m in found[sid]}
        for m in photos:
            assert replace(got[m.image_id], content_sha256=m.content_sha256) == m
            assert got[m.image_id].content_sha256 == ""

    def test_queued_and_settled_photos_are_not_stalled(self, database: ResultsDatabase) -> None:
        sid, photos = self._submitting(database, 4)
        database.mark_queued(sid, [photos[0].image_id], finished=False)
        database.upsert([error_row(photos[1], "empty file", "m:1")])
        time.sleep(0.01)
        assert self._ids(database.stalled(0)) == {sid: {photos[2].image_id, photos[3].image_id}}
        database.mark_queued(sid, [photos[2].image_id, photos[3].image_id], finished=False)
        time.sleep(0.01)
        assert database.stalled(0) == {sid: []}  # every photo queued, the submit not over
        database.mark_queued(sid, [], finished=True)
        assert database.stalled(0) == {}

    def test_a_finished_submit_is_never_stalled(self, database: ResultsDatabase) -> None:
        sid, photos = self._submitting(database, 2)
        database.mark_queued(sid, [m.image_id for m in photos], finished=True)
        time.sleep(0.01)
        assert database.stalled(0) == {}

    def test_the_photo_list_reads_back_in_submit_order(self, database: ResultsDatabase) -> None:
        record = SessionRecord(new_id(), utcnow(), 5)
        names = ["z.jpg", "a.jpg", "m.jpg", "a.jpg", "b.jpg"]  # neither sorted nor unique
        photos = [message(record.session_id, n) for n in names]
        database.add_session(record, photos)
        database.add_session(session())  # another session's list is not in it
        database.mark_queued(record.session_id, [photos[1].image_id], finished=True)
        got = database.photo_list(record.session_id)
        assert [m.image_id for m in got] == [m.image_id for m in photos]  # queued or not
        assert got[0] == replace(photos[0], content_sha256="")
        assert database.photo_list("no-such-session") == []

    def test_progress_makes_a_submit_young_again(self, database: ResultsDatabase) -> None:
        sid, photos = self._submitting(database, 2)
        time.sleep(0.3)
        assert set(database.stalled(older_than=0.2)) == {sid}
        database.mark_queued(sid, [photos[0].image_id], finished=False)
        assert database.stalled(older_than=0.2) == {}


# --- Heartbeats, IdempotencyKeys, Callbacks -------------------------------------------------


class HeartbeatsContract:
    """One heartbeat per worker, its latest; newest first."""

    def test_the_latest_beat_of_each_worker_newest_first(self, database: ResultsDatabase) -> None:
        before = datetime.now(UTC)
        database.beat("w1", "worker", {"state": "starting"})
        time.sleep(0.01)
        database.beat("w2", "spark", {"state": "running", "lag": 3})
        time.sleep(0.01)
        database.beat("w1", "worker", {"state": "running", "processed": 5})
        beats = database.latest()
        assert [(w, kind, info) for w, kind, _at, info in beats] == [
            ("w1", "worker", {"state": "running", "processed": 5}),
            ("w2", "spark", {"state": "running", "lag": 3}),
        ]
        assert all(before <= at <= datetime.now(UTC) for _w, _k, at, _i in beats)

    def test_no_worker_no_beat(self, database: ResultsDatabase) -> None:
        assert database.latest() == []


class IdempotencyKeysContract:
    """``claim`` a key: None when new, then the claim as it stands: its request's fingerprint,
    when it was claimed, the batch recorded for it, its answer once settled."""

    def test_a_key_is_claimed_once_then_answers(self, database: ResultsDatabase) -> None:
        before = datetime.now(UTC)
        assert database.claim("k1", "fp1") is None
        running = database.claim("k1", "fp2")  # the first request still runs
        assert running is not None and running.answer is None and running.session_id is None
        assert running.fingerprint == "fp1"  # the first request's, whoever asks
        assert before <= running.claimed_at <= datetime.now(UTC)
        database.settle("k1", '{"session_id": "s1"}')
        settled = database.claim("k1", "fp1")
        assert settled is not None and settled.answer == '{"session_id": "s1"}'
        database.release("k1")  # settled: kept
        assert database.claim("k1") == settled
        assert database.claim("k2") is None  # keys are independent

    def test_a_claim_records_its_batch_before_it_settles(self, database: ResultsDatabase) -> None:
        assert database.claim("k1", "fp") is None
        database.bind("k1", "s1")
        found = database.claim("k1", "fp")
        assert found is not None and found.session_id == "s1" and found.answer is None
        database.settle("k1", "answer")
        database.bind("k1", "s2")  # a settled claim keeps its batch
        found = database.claim("k1", "fp")
        assert found is not None and (found.session_id, found.answer) == ("s1", "answer")
        database.bind("k2", "s3")  # never claimed: nothing recorded
        assert database.claim("k2") is None

    def test_a_released_key_is_free_again(self, database: ResultsDatabase) -> None:
        assert database.claim("k1") is None
        database.release("k1")
        assert database.claim("k1") is None

    def test_a_release_before_a_time_spares_a_newer_claim(self, database: ResultsDatabase) -> None:
        assert database.claim("k1", "fp") is None
        first = database.claim("k1", "fp")
        assert first is not None
        database.release("k1", claimed_before=first.claimed_at - timedelta(seconds=1))
        assert database.claim("k1", "fp") == first  # claimed after: kept
        database.release("k1", claimed_before=first.claimed_at)  # the claim as read back
        assert database.claim("k1", "fp") is None  # claimed anew

    def test_settling_a_key_never_claimed_records_nothing(self, database: ResultsDatabase) -> None:
        database.settle("k1", "answer")
        database.release("k2")
        assert database.claim("k1") is None and database.claim("k2") is None


class CallbacksContract:
    """A callback is due until settled done; each settle counts one attempt."""

    def test_callbacks(self, database: ResultsDatabase) -> None:
        db = database
        db.add_callback("s1", "https://hooks.example/a")
        now = utcnow() + timedelta(seconds=1)
        assert db.due_callbacks(now) == [("s1", "https://hooks.example/a", 0)]
        db.settle_callback("s1", now + timedelta(seconds=60))
        assert db.due_callbacks(now) == []
        assert db.due_callbacks(now + timedelta(seconds=61)) == [
            ("s1", "https://hooks.example/a", 1)
        ]
        db.settle_callback("s1", None)
        assert db.due_callbacks(now + timedelta(days=1)) == []

    def test_due_callbacks_come_soonest_first(self, database: ResultsDatabase) -> None:
        for sid in ("s1", "s2", "s3"):
            database.add_callback(sid, f"https://hooks.example/{sid}")
        now = utcnow() + timedelta(seconds=1)
        database.settle_callback("s1", now + timedelta(seconds=20))
        database.settle_callback("s2", now + timedelta(seconds=10))
        later = now + timedelta(seconds=30)
        assert [sid for sid, _url, _n in database.due_callbacks(later)] == ["s3", "s2", "s1"]

    def test_a_session_has_one_callback(self, database: ResultsDatabase) -> None:
        database.add_callback("s1", "https://hooks.example/a")
        with raises_results_error():
            database.add_callback("s1", "https://hooks.example/b")
        due = database.due_callbacks(utcnow() + timedelta(seconds=1))
        assert due == [("s1", "https://hooks.example/a", 0)]

    def test_settling_an_unknown_callback_does_nothing(self, database: ResultsDatabase) -> None:
        database.settle_callback("no-such-session", None)
        assert database.due_callbacks(utcnow() + timedelta(days=1)) == []


# --- LabelStore and ModelVersions -----------------------------------------------------------


class LabelStoreContract:
    """The latest label of each photo (its content) is current; the earlier ones its history,
    current again when a later one is taken back."""

    def test_the_latest_label_of_a_photo_is_current(self, database: ResultsDatabase) -> None:
        now = utcnow()
        first = label("photo-a", "apple", now - timedelta(minutes=3))
        other = label("photo-b", "kiwi", now - timedelta(minutes=2))
        second = label("photo-a", "pear", now - timedelta(minutes=1))
        for x in (first, other, second):
            database.add_label(x)
        assert database.labels() == [second, other]  # newest first, one per photo
        assert database.labels(limit=1) == [second]
        assert database.labels(before=second.label_id) == [other]
        assert database.labels(before=other.label_id) == []

    def test_the_same_time_orders_by_label_id(self, database: ResultsDatabase) -> None:
        now = utcnow()
        a, b = label("p1", "apple", now, "label-a"), label("p2", "kiwi", now, "label-b")
        database.add_label(b)
        database.add_label(a)
        assert database.labels() == [b, a]
        assert database.labels(before="label-b") == [a]

    def test_taking_a_label_back_makes_the_previous_current(
        self, database: ResultsDatabase
    ) -> None:
        now = utcnow()
        first = label("photo-a", "apple", now - timedelta(minutes=2))
        second = label("photo-a", "pear", now - timedelta(minutes=1))
        database.add_label(first)
        database.add_label(second)
        assert database.remove_label(second.label_id) == second
        assert database.labels() == [first]
        assert database.remove_label(first.label_id) == first
        assert database.labels() == []
        with pytest.raises(NotFoundError, match="no label"):
            database.remove_label(first.label_id)

    def test_a_label_id_is_recorded_once(self, database: ResultsDatabase) -> None:
        x = label("photo-a", "apple", utcnow())
        database.add_label(x)
        with raises_results_error():
            database.add_label(replace(x, label="pear"))
        assert database.labels() == [x]

    def test_a_foreign_cursor_is_refused(self, database: ResultsDatabase) -> None:
        database.add_label(label("photo-a", "apple", utcnow()))
        with pytest.raises(CursorError):
            database.labels(before="no-such-label")


class ModelVersionsContract:
    """Every adapted version newest first; the live one ``base`` until one is activated."""

    def test_versions_newest_first(self, database: ResultsDatabase) -> None:
        now = utcnow()
        old, new = version("t1", now - timedelta(hours=1)), version("t2", now)
        assert database.versions() == []
        database.add_version(new)
        database.add_version(old)
        assert database.versions() == [new, old]

    def test_the_base_is_live_until_a_version_is_activated(self, database: ResultsDatabase) -> None:
        assert database.active_version() == BASE_VERSION
        database.add_version(version("t1", utcnow()))
        assert database.active_version() == BASE_VERSION  # made is not live
        database.activate("t1")
        assert database.active_version() == "t1"
        database.activate(BASE_VERSION)  # back to the shipped model
        assert database.active_version() == BASE_VERSION

    def test_an_unknown_version_cannot_be_activated(self, database: ResultsDatabase) -> None:
        with pytest.raises(NotFoundError, match="no model version"):
            database.activate("t9")
        assert database.active_version() == BASE_VERSION

    def test_a_version_is_recorded_once(self, database: ResultsDatabase) -> None:
        made = version("t1", utcnow())
        database.add_version(made)
        with raises_results_error():
            database.add_version(replace(made, method="prior"))
        assert database.versions() == [made]
