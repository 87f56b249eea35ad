"""The results database's newer records on PostgreSQL (the local stack's): pages of sessions
and rows, session owners, idempotency keys, callbacks and labels, as on SQLite."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from fruitstream.adapters.sql import SqlDatabase
from fruitstream.domain import (
    ImageMessage,
    Label,
    ResultRow,
    SessionRecord,
    new_id,
    utcnow,
)
from fruitstream.errors import CursorError, NotFoundError
from tests.stack import stack_env

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def db() -> SqlDatabase:
    url = stack_env()["FRUITSTREAM_DATABASE_URL"]
    return SqlDatabase.from_url(url)


def test_pages_owners_and_rows(db: SqlDatabase) -> None:
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    now = utcnow()
    ids = []
    for i in range(5):
        sid = new_id()
        ids.append(sid)
        db.add_session(SessionRecord(sid, now + timedelta(seconds=i // 2), 3, owner=owner))
    seen, before = [], None
    while True:
        page = db.sessions(limit=2, before=before, owner=owner)
        seen += [s.session_id for s in page]
        if len(page) < 2:
            break
        before = page[-1].session_id
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert {s.owner for s in db.sessions(limit=100, owner=owner)} == {owner}
    msgs = [ImageMessage(new_id(), ids[0], "k", f"{n % 2}.jpg", "", now) for n in range(3)]
    db.upsert([ResultRow.from_outcome(m, RuntimeError("x"), "m:1") for m in msgs])
    first = db.results(ids[0], limit=2)
    rest = db.results(ids[0], limit=2, after=first[-1].image_id)
    assert len(first) == 2 and len(rest) == 1
    assert db.result(msgs[0].image_id).image_id == msgs[0].image_id
    with pytest.raises(CursorError):
        db.results(ids[0], after="nope")
    with pytest.raises(NotFoundError):
        db.result("nope")


def test_idempotency_keys_and_callbacks(db: SqlDatabase) -> None:
    key = uuid.uuid4().hex
    assert db.claim(key, "fp") is None
    running = db.claim(key, "fp")
    assert running is not None and running.answer is None and running.fingerprint == "fp"
    db.bind(key, "s1")
    db.settle(key, "answer")
    settled = db.claim(key, "fp")
    assert settled is not None and (settled.answer, settled.session_id) == ("answer", "s1")
    sid = new_id()
    db.add_callback(sid, "https://hooks.example/x")
    later = utcnow() + timedelta(seconds=1)
    assert (sid, "https://hooks.example/x", 0) in db.due_callbacks(later)
    db.settle_callback(sid, None)
    assert all(c[0] != sid for c in db.due_callbacks(later))


def test_labels_keep_history_on_postgres(db: SqlDatabase) -> None:
    content = uuid.uuid4().hex
    now = utcnow()
    first = Label(new_id(), content, "k", "kiwi", "apple", False, "m:1", "cli", now)
    second = Label(
        new_id(), content, "k", "lime", "apple", False, "m:1", "api", now + timedelta(seconds=1)
    )
    db.add_label(first)
    db.add_label(second)
    current = [x for x in db.labels(limit=1000) if x.content_sha256 == content]
    assert [x.label for x in current] == ["lime"]
    db.remove_label(second.label_id)
    current = [x for x in db.labels(limit=1000) if x.content_sha256 == content]
    assert [x.label for x in current] == ["kiwi"]
