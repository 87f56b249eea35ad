"""Pages of sessions and of result rows, on SQLite (the SQL adapter) and on the fake, and
through the API with cursors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fruitstream.adapters.sql import SqlDatabase
from fruitstream.domain import ImageMessage, ResultRow, SessionRecord, new_id, utcnow
from fruitstream.entrypoints.api import create_app
from fruitstream.errors import CursorError
from fruitstream.ports import ResultsDatabase
from tests.fakes import MemoryResultsDatabase, fake_world


def _databases(tmp_path: Path) -> list[ResultsDatabase]:
    return [SqlDatabase.from_url(f"sqlite:///{tmp_path / 'p.db'}"), MemoryResultsDatabase()]


def _fill(db: ResultsDatabase, sessions: int, rows: int) -> list[str]:
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


@pytest.mark.parametrize("kind", ["sql", "memory"])
def test_every_session_and_row_once_page_by_page(tmp_path: Path, kind: str) -> None:
    db = _databases(tmp_path)[0 if kind == "sql" else 1]
    ids = _fill(db, sessions=7, rows=7)
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


def test_the_api_pages_with_cursors_and_links(tmp_path: Path) -> None:
    world = fake_world(tmp_path)
    ids = _fill(world.db, sessions=3, rows=5)
    with TestClient(create_app(world.service, tokens=[])) as client:
        first = client.get("/v1/batches?limit=2")
        assert len(first.json()) == 2
        cursor = first.headers["x-next-cursor"]
        assert f"cursor={cursor}" in first.headers["link"] and 'rel="next"' in first.headers["link"]
        last = client.get(f"/v1/batches?limit=2&cursor={cursor}")
        assert len(last.json()) == 1 and "x-next-cursor" not in last.headers
        assert {b["session_id"] for b in first.json() + last.json()} == set(ids)
        rows = client.get(f"/v1/batches/{ids[0]}/results?limit=3")
        more = client.get(
            f"/v1/batches/{ids[0]}/results?limit=3&cursor={rows.headers['x-next-cursor']}"
        )
        assert len(rows.json()) == 3 and len(more.json()) == 2
        bad = client.get(f"/v1/batches/{ids[0]}/results?cursor=nope")
        assert bad.status_code == 404 and bad.json()["type"].endswith(":unknown-cursor")
        assert len(client.get("/v1/batches?cursor=").json()) == 3  # empty: the first page
        assert client.get("/v1/batches?limit=0").status_code == 422
        assert client.get("/v1/batches?limit=1001").status_code == 422
    world.service.stop(timeout=5)


def test_sessions_of_one_owner_on_sql(tmp_path: Path) -> None:
    db = SqlDatabase.from_url(f"sqlite:///{tmp_path / 'o.db'}")
    now = utcnow()
    for owner in ("a", "b", "a", ""):
        db.add_session(SessionRecord(new_id(), now, 1, owner=owner))
    assert len(db.sessions(owner="a")) == 2 and len(db.sessions()) == 4
    assert {s.owner for s in db.sessions(owner="b")} == {"b"}


def test_callbacks_on_sql(tmp_path: Path) -> None:
    db = SqlDatabase.from_url(f"sqlite:///{tmp_path / 'c.db'}")
    db.add_callback("s1", "https://hooks.example/a")
    now = utcnow() + timedelta(seconds=1)
    assert db.due_callbacks(now) == [("s1", "https://hooks.example/a", 0)]
    db.settle_callback("s1", now + timedelta(seconds=60))
    assert db.due_callbacks(now) == []
    assert db.due_callbacks(now + timedelta(seconds=61)) == [("s1", "https://hooks.example/a", 1)]
    db.settle_callback("s1", None)
    assert db.due_callbacks(now + timedelta(days=1)) == []
