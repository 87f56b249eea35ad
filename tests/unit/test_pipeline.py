"""Pipeline logic with the in-memory store and queue and a SQLite results file."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from fruitstream.adapters.local_queue import SqlQueue
from fruitstream.adapters.sql import SqlDatabase
from fruitstream.domain import ImageMessage, utcnow
from fruitstream.errors import MessageError
from fruitstream.pipeline import Upload
from tests.conftest import jpeg_bytes


def test_submit_stores_records_and_announces(parts) -> None:  # type: ignore[no-untyped-def]
    store, queue, db, pipeline = parts
    report = pipeline.submit([Upload("a b.jpg", jpeg_bytes()), Upload("../x.png", jpeg_bytes())])
    assert len(report.queued) == 2 and not report.rejected
    assert db.get_session(report.session_id).submitted == 2
    keys = sorted(store.objects)
    assert all(
        re.fullmatch(rf"uploads/\d{{8}}/{report.session_id}/[0-9a-f-]{{36}}-(a_b\.jpg|x\.png)", k)
        for k in keys
    ), keys
    raw = [d.raw for d in queue.take(10)]
    messages = [ImageMessage.from_json(r) for r in raw]
    # A message of an earlier release with an image_url is still read (the key is ignored).
    older = json.loads(raw[0]) | {"image_url": None}
    assert ImageMessage.from_json(json.dumps(older)) == messages[0]
    assert {m.object_key for m in messages} == set(keys)
    assert set(json.loads(raw[0])) == {
        "image_id", "session_id", "object_key", "filename", "content_sha256",
        "submitted_at", "schema",
    }  # fmt: skip
    assert messages[0].submitted_at.tzinfo is not None


def test_precheck_failures_become_error_rows_and_are_not_stored(parts) -> None:  # type: ignore[no-untyped-def]
    store, _queue, db, pipeline = parts
    report = pipeline.submit(
        [Upload("empty.jpg", b""), Upload("big.jpg", b"x" * 60_000), Upload("ok.jpg", jpeg_bytes())]
    )
    assert set(report.rejected) == {"empty.jpg", "big.jpg"}
    assert "empty file" in report.rejected["empty.jpg"]
    assert "over the limit" in report.rejected["big.jpg"]
    assert len(store.objects) == 1
    progress = db.progress(report.session_id)
    assert (progress.submitted, progress.done, progress.errors) == (3, 2, 2)


def test_messages_the_queue_refuses_are_reported_and_recorded(parts) -> None:  # type: ignore[no-untyped-def]
    _store, queue, db, pipeline = parts

    real_publish = queue.publish

    def refuse_second(messages):  # type: ignore[no-untyped-def]
        queue.fail_ids = {messages[1].image_id}
        return real_publish(messages)

    queue.publish = refuse_second  # type: ignore[method-assign]
    report = pipeline.submit([Upload("1.jpg", jpeg_bytes()), Upload("2.jpg", jpeg_bytes())])
    assert list(report.not_sent) == ["2.jpg"]
    assert "could not be queued" in report.not_sent["2.jpg"]
    rows = db.results(report.session_id)
    assert [(r.filename, r.status) for r in rows] == [("2.jpg", "error")]


def test_message_contract_validation() -> None:
    with pytest.raises(MessageError, match="message has no field 'submitted_at'"):
        ImageMessage.from_json(json.dumps({"schema": 1, "image_id": str(uuid.uuid4())}))
    with pytest.raises(MessageError, match="bad field"):
        ImageMessage.from_json(json.dumps({"schema": 1, "image_id": "not-a-uuid"}))


def test_local_queue_leases_expire_and_redeliver(db: SqlDatabase) -> None:
    producer = SqlQueue(db)
    msgs = [ImageMessage(str(uuid.uuid4()), "s", f"k{i}", "f", "0", utcnow()) for i in range(5)]
    assert producer.publish(msgs) == {}
    a = SqlQueue(db, owner="a", lease_seconds=0.3)
    b = SqlQueue(db, owner="b", lease_seconds=30)
    taken = a.take(3)
    assert len(taken) == 3
    assert len(b.take(10)) == 2  # the leased three are not handed out twice
    time.sleep(0.4)
    again = b.take(10)
    assert sorted(d.handle for d in again) == sorted(d.handle for d in taken)
    assert all(d.attempts == 2 for d in again)
    a.ack(taken)  # a's lease is gone: its late ack must not delete b's messages
    assert producer.depth() == 5
    b.ack(again)
    assert producer.depth() == 2
