"""Idempotency keys under faults and misuse (over the fakes): a retry after the first request
died gets the batch it made, repaired; a key reused with another request is a 422."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fruitstream.domain import OPERATOR, ImageMessage
from fruitstream.entrypoints.api import create_app
from fruitstream.errors import ConflictError, IdempotencyMismatchError
from fruitstream.pipeline import Pipeline, SubmitReport, Upload
from fruitstream.service.batches import idempotency_key, request_fingerprint
from tests.fakes import fake_world

STALLED = 0.2  # fake_world's stalled_submit_seconds
TOKEN = "idem-token-0123456789"
PHOTOS = [("b.jpg", b"fruit:banana"), ("a.jpg", b"fruit:apple"), ("c.jpg", b"fruit:cherry")]


def _files(photos: Sequence[tuple[str, bytes]] = PHOTOS) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (name, data)) for name, data in photos]


def _headers(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKEN}", "idempotency-key": key}


def _summary(report: SubmitReport) -> str:
    return f"{report.session_id}:" + ",".join(f"{p.filename}={p.state}" for p in report.photos)


class KilledError(RuntimeError):
    """The request's process died here (what a kill -9 leaves in the database)."""


def test_a_retry_after_a_crash_mid_submit_gets_the_repaired_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stalled = 1.0  # room for the early retry on a busy machine
    world = fake_world(tmp_path, start_workers=False, stalled_submit_seconds=stalled)
    publish = world.queue.publish

    def crash(_messages: Sequence[ImageMessage]) -> dict[str, str]:
        raise KilledError("killed after storing the photos, before queueing them")

    app = create_app(world.service, tokens=[TOKEN])
    with TestClient(app, raise_server_exceptions=False) as client:
        monkeypatch.setattr(world.queue, "publish", crash)
        first = client.post("/v1/batches", files=_files(), headers=_headers("order-1"))
        assert first.status_code == 500
        monkeypatch.setattr(world.queue, "publish", publish)
        [sid] = world.db.session_records  # the batch it made, its photos stored, none queued
        assert world.queue.depth() == 0
        # At once: the submit may still be moving (another process), so the key is taken.
        early = client.post("/v1/batches", files=_files(), headers=_headers("order-1"))
        assert early.status_code == 409, early.text
        time.sleep(stalled + 0.1)  # the submit stalled: its claimer is dead
        late = client.post("/v1/batches", files=_files(), headers=_headers("order-1"))
        assert late.status_code == 202, late.text
        assert late.headers["idempotent-replayed"] == "true"
        batch = late.json()
        assert batch["session_id"] == sid and list(world.db.session_records) == [sid]
        planned = [m.image_id for m in world.db.photo_list(sid)]
        assert [(p["filename"], p["image_id"], p["state"]) for p in batch["photos"]] == [
            (name, image_id, "queued") for (name, _), image_id in zip(PHOTOS, planned, strict=True)
        ]
        assert batch["submitted"] == batch["queued"] == 3
        assert world.queue.depth() == 3  # repaired: every stored photo queued
        again = client.post("/v1/batches", files=_files(), headers=_headers("order-1"))
        assert again.status_code == 202 and again.json() == batch  # settled now
    world.service.stop(timeout=5)


def test_a_live_submit_keeps_its_key_and_a_dead_one_is_answered(tmp_path: Path) -> None:
    world = fake_world(tmp_path, start_workers=False)
    scoped = idempotency_key("k", OPERATOR)

    def died(step: str) -> None:
        if step == "session-recorded":
            raise KilledError(step)

    # A request claimed the key, recorded its batch and died before storing a photo.
    assert world.db.claim(scoped, "fp") is None
    sid = "batch-of-the-dead-request"
    world.db.bind(scoped, sid)
    pipeline = Pipeline(world.store, world.queue, world.db, world.db, failpoint=died)
    with pytest.raises(KilledError):
        pipeline.submit([Upload(n, d) for n, d in PHOTOS[:2]], session_id=sid)

    def work(_sid: str) -> str:
        raise AssertionError("the batch exists: never submitted again")

    def once() -> tuple[str, bool]:
        return world.service.once("k", work, fingerprint="fp", recover=_summary)

    for _ in range(4):  # older than the stalled time in all, but its submit moves
        time.sleep(STALLED / 2)
        world.db.mark_queued(sid, [], finished=False)
        with pytest.raises(ConflictError):
            once()
    time.sleep(STALLED + 0.1)  # no move since: dead
    assert once() == (f"{sid}:b.jpg=rejected,a.jpg=rejected", True)  # never stored
    rows = world.db.results(sid)
    assert {r.error for r in rows} == {"the submit was interrupted before this photo was stored"}
    assert once() == (f"{sid}:b.jpg=rejected,a.jpg=rejected", True)


def test_a_claim_that_recorded_no_batch_is_carried_out_again(tmp_path: Path) -> None:
    world = fake_world(tmp_path, start_workers=False)
    scoped = idempotency_key("k", OPERATOR)
    assert world.db.claim(scoped, "fp") is None  # and its request died at once
    made: list[str] = []

    def work(session_id: str) -> str:
        made.append(session_id)
        return "answer"

    with pytest.raises(ConflictError):  # it may be on its way to recording its batch
        world.service.once("k", work, fingerprint="fp", recover=_summary)
    time.sleep(STALLED + 0.1)
    assert world.service.once("k", work, fingerprint="fp", recover=_summary) == ("answer", False)
    assert len(made) == 1
    claim = world.db.claim(scoped, "fp")
    assert claim is not None and claim.session_id == made[0]  # recorded before the work
    assert world.service.once("k", work, fingerprint="fp") == ("answer", True)


def test_the_same_key_with_another_request_is_a_422(tmp_path: Path) -> None:
    world = fake_world(tmp_path)
    with TestClient(create_app(world.service, tokens=[TOKEN])) as client:
        first = client.post("/v1/batches", files=_files(), headers=_headers("order-2"))
        assert first.status_code == 202
        other_files = _files(PHOTOS[:1])
        renamed = _files([("z.jpg", PHOTOS[0][1]), *PHOTOS[1:]])
        changed = _files([(PHOTOS[0][0], b"fruit:kiwi"), *PHOTOS[1:]])
        for files, params in [
            (other_files, {}),
            (renamed, {}),
            (changed, {}),
            (_files(), {"name": "another name"}),
        ]:
            r = client.post("/v1/batches", files=files, params=params, headers=_headers("order-2"))
            assert r.status_code == 422, (files, params, r.text)
            assert r.json()["type"] == "urn:fruitstream:problem:idempotency-key-reused"
        same = client.post("/v1/batches", files=_files(), headers=_headers("order-2"))
        assert same.status_code == 202 and same.json() == first.json()  # another boundary
        assert same.headers["idempotent-replayed"] == "true"
        assert len(world.db.session_records) == 1
    world.service.stop(timeout=5)


def test_a_mismatch_comes_before_the_conflict(tmp_path: Path) -> None:
    world = fake_world(tmp_path, start_workers=False)
    assert world.db.claim(idempotency_key("k", OPERATOR), "fp-first") is None  # running
    with pytest.raises(IdempotencyMismatchError):
        world.service.once("k", lambda _sid: "x", fingerprint="fp-other", recover=_summary)
    with pytest.raises(ConflictError):
        world.service.once("k", lambda _sid: "x", fingerprint="fp-first", recover=_summary)


def test_the_fingerprint_is_the_request_not_its_framing(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"fruit:apple")
    base = [Upload("a.jpg", b"fruit:apple"), Upload("b.jpg", b"fruit:banana")]
    fp = request_fingerprint(base, "n", None)
    from_disk = [Upload("a.jpg", tmp_path / "a.jpg"), base[1]]
    assert request_fingerprint(from_disk, "n", None) == fp
    assert (
        len(
            {
                fp,
                request_fingerprint(base[::-1], "n", None),
                request_fingerprint(base, "", None),
                request_fingerprint(base, "n", "https://hooks.example/x"),
                request_fingerprint([Upload("a.jpg", b"fruit:apple")], "n", None),
                request_fingerprint([Upload("a.jpgb.jpg", b"fruit:apple"), base[1]], "n", None),
                request_fingerprint([Upload("a.jpg", b"fruit:kiwi"), base[1]], "n", None),
            }
        )
        == 7
    )


def test_an_older_idempotency_table_is_migrated(tmp_path: Path) -> None:
    from fruitstream.adapters.sql import SqlDatabase

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE idempotency_keys (key VARCHAR(64) PRIMARY KEY, answer TEXT,"
                " created_at DATETIME NOT NULL)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO idempotency_keys VALUES ('old', 'kept', '2026-01-01 00:00:00')")
        )
    db = SqlDatabase.from_url(url)
    old = db.claim("old", "fp")
    assert old is not None and (old.answer, old.fingerprint, old.session_id) == ("kept", "", None)
    assert db.claim("new", "fp") is None
    db.bind("new", "s1")
    new = db.claim("new", "fp")
    assert new is not None and (new.fingerprint, new.session_id) == ("fp", "s1")
