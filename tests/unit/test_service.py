"""FruitService through its constructor, over the fakes: submit, follow, repair, health, and
who classifies a batch. No model file, no dataset, no server."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fruitstream.domain import ImageMessage, SessionRecord, Status, new_id, object_key, utcnow
from fruitstream.errors import ConfigError, NotFoundError
from fruitstream.housekeeping import process_started
from fruitstream.pipeline import Upload
from tests.fakes import FakeWorld, fake_world

World = FakeWorld


def _world(tmp_path: Path, consumes_here: bool = True) -> World:
    return fake_world(tmp_path, consumes_here, model_precision="auto")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = _world(tmp_path)
    yield w
    w.service.stop(timeout=5)


def _photos() -> list[Upload]:
    return [
        Upload("apple.jpg", b"fruit:apple"),
        Upload("banana.jpg", b"fruit:banana"),
        Upload("stone.jpg", b"fruit:?"),
        Upload("empty.jpg", b""),
    ]


def test_submit_classifies_here_when_no_worker_is_alive(world: World) -> None:
    report = world.service.submit(_photos(), name="market")
    assert report.classified_here
    assert len(report.queued) == 3 and set(report.rejected) == {"empty.jpg"}
    progress = world.service.wait(report.session_id, timeout=10, poll=0.01)
    assert progress.complete and (progress.done, progress.errors) == (4, 1)
    rows = {r.filename: r for r in world.service.results(report.session_id)}
    assert rows["apple.jpg"].label == "apple" and rows["apple.jpg"].known
    assert rows["stone.jpg"].known is False
    assert rows["empty.jpg"].status == Status.ERROR and "empty" in (rows["empty.jpg"].error or "")
    assert {r.model_version for r in rows.values()} == {"fake:0.1"}
    assert world.service.worker_alive()


def test_queue_only_leaves_the_batch_and_says_once_that_nothing_classifies(
    world: World,
) -> None:
    report = world.service.submit(_photos()[:2], queue_only=True)
    assert not report.classified_here
    told: list[str] = []
    progress = world.service.wait(
        report.session_id, timeout=1.6, poll=0.05, on_no_worker=lambda: told.append("x"),
        queue_only=True,
    )  # fmt: skip
    assert not progress.complete and progress.done == 0
    assert told == ["x"]
    assert world.queue.depth() == 2 and world.classifier.calls == 0


def test_waiting_starts_a_worker_when_the_last_one_is_gone(world: World) -> None:
    report = world.service.submit(_photos()[:2], queue_only=True)
    assert not world.service.worker_alive()
    progress = world.service.wait(report.session_id, timeout=10, poll=0.05)
    assert progress.complete and world.classifier.calls == 2


def test_no_second_worker_while_another_process_beats(world: World) -> None:
    # Another live process of this machine: the one that started the tests.
    other = os.getppid()
    alive = {
        "pid": other,
        "host": socket.gethostname(),
        "state": "running",
        "rate": 3.0,
        "started": process_started(other),
    }
    world.db.beat("elsewhere:1:1", "worker", alive)
    report = world.service.submit(_photos()[:1])
    assert not report.classified_here and world.queue.depth() == 1
    workers = next(h for h in world.service.health() if h.name == "workers")
    assert workers.ok and "1 alive (worker)" in workers.detail
    assert workers.figures == ("3.0 photos/s",)


def test_with_a_queue_that_has_its_own_runner_nothing_is_started_here(tmp_path: Path) -> None:
    w = _world(tmp_path, consumes_here=False)
    assert not w.service.can_classify_here()
    report = w.service.submit(_photos()[:1])
    assert not report.classified_here
    told: list[str] = []
    w.service.wait(report.session_id, timeout=1.3, poll=0.05, on_no_worker=lambda: told.append(""))
    assert len(told) == 1
    with pytest.raises(ConfigError, match="Spark job"):
        w.service.worker()


def test_repair_finishes_a_submit_that_died_half_way(world: World) -> None:
    now = utcnow()
    sid = new_id()
    photos = [
        ImageMessage(i, sid, object_key(sid, i, f"{n}.jpg", now), f"{n}.jpg", "", now)
        for n, i in (("stored", new_id()), ("lost", new_id()))
    ]
    world.db.add_session(SessionRecord(sid, now, 2), photos)
    world.store.put(photos[0].object_key, b"fruit:kiwi")
    assert world.service.repair(older_than=60) == {}  # not stalled yet
    assert world.service.repair(older_than=0) == {sid: 2}
    assert world.queue.depth() == 1
    [row] = world.service.results(sid)
    assert row.filename == "lost.jpg" and row.status == Status.ERROR
    assert "interrupted" in (row.error or "")
    assert world.service.repair(older_than=0) == {}  # settled once


def test_the_workers_chores_repair_stalled_submits(world: World) -> None:
    now = utcnow()
    sid, image_id = new_id(), new_id()
    msg = ImageMessage(image_id, sid, object_key(sid, image_id, "a.jpg", now), "a.jpg", "", now)
    world.db.add_session(SessionRecord(sid, now, 1), [msg])
    world.store.put(msg.object_key, b"fruit:apple")
    world.db.submitting[sid] -= 10  # no progress for 10 s
    world.service.ensure_worker()
    assert world.service.wait(sid, timeout=10, poll=0.05).complete
    assert world.service.results(sid)[0].label == "apple"


def test_a_started_worker_is_alive_before_its_warm_up_ends(world: World) -> None:
    # The app checks health right after starting its worker; a slow warm-up (a busy machine)
    # once left the sidebar saying no worker was running.
    world.classifier.warm_gate = threading.Event()
    assert world.service.ensure_worker()
    workers = next(h for h in world.service.health() if h.name == "workers")
    world.classifier.warm_gate.set()
    assert workers.ok, workers.detail


def test_health_lists_every_backend_then_the_model(world: World) -> None:
    ready, checks = world.service.ready()
    assert [h.name for h in checks] == [
        "storage", "queue", "results database", "workers", "model"
    ]  # fmt: skip
    assert ready
    model = checks[-1]
    assert model.ok and model.detail == "fake v0.1, fp32 graph"
    assert any(line.startswith("CPU: ") for line in model.figures)
    world.db.down = True
    ready, checks = world.service.ready()
    assert not ready
    assert not next(h for h in checks if h.name == "results database").ok


def test_a_missing_model_is_a_health_line_not_a_crash(tmp_path: Path) -> None:
    w = _world(tmp_path)
    (tmp_path / "model" / "bundle.json").unlink()
    model = w.service.model_health()
    assert not model.ok and "no model bundle" in model.detail
    assert w.service.ready()[0]  # the model is not a backend: batches can still queue


def test_queue_lag_is_the_depth_of_the_embedded_queue(world: World) -> None:
    world.service.submit(_photos()[:3], queue_only=True)
    assert world.service.queue_lag() == 3.0


def test_progress_of_an_unknown_session_is_not_found(world: World) -> None:
    with pytest.raises(NotFoundError):
        world.service.progress("no-such-session")


def test_sessions_newest_first_with_their_progress(world: World) -> None:
    first = world.service.submit(_photos()[:1], name="first", queue_only=True)
    second = world.service.submit(_photos()[3:], name="second", queue_only=True)
    summaries = world.service.sessions()
    assert [s.session.session_id for s in summaries][:2] in (
        [second.session_id, first.session_id],
        [first.session_id, second.session_id],  # same timestamp: either order
    )
    by_id = {s.session.session_id: s.progress for s in summaries}
    assert by_id[second.session_id].complete and by_id[second.session_id].errors == 1
    assert not by_id[first.session_id].complete


def test_classify_files_reads_in_chunks_and_reports_each_file(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"fruit:orange")
    (folder / "b.jpg").write_bytes(b"garbage")
    (folder / ".hidden.jpg").write_bytes(b"fruit:apple")
    skipped: list[tuple[Path, str]] = []
    results = list(world.service.classify_files([folder], skipped=skipped))
    assert [Path(r.path).name for r in results] == ["a.jpg", "b.jpg"]
    assert results[0].prediction is not None and results[0].prediction.label == "orange"
    assert results[1].prediction is None and "fake" in (results[1].error or "")
    assert results[1].to_dict()["top_k"] == [] and set(results[0].to_dict()) == {
        "path", "label", "guess", "confidence", "known", "top_k", "error"
    }  # fmt: skip
    assert [p.name for p, _why in skipped] == [".hidden.jpg"]


def test_every_file_has_its_receipt_in_order_even_with_repeated_names(world: World) -> None:
    uploads = [
        Upload("big.jpg", b"fruit:apple"),
        Upload("big.jpg", b""),
        Upload("banana.jpg", b"fruit:banana"),
        Upload("big.jpg", b"fruit:orange"),
    ]
    report = world.service.submit(uploads, queue_only=True)
    assert report.submitted == 4 == world.service.progress(report.session_id).submitted
    assert [p.filename for p in report.photos] == ["big.jpg", "big.jpg", "banana.jpg", "big.jpg"]
    assert [p.state for p in report.photos] == ["queued", "rejected", "queued", "queued"]
    assert len({p.image_id for p in report.photos}) == 4
    assert "empty" in (report.photos[1].reason or "")
    world.service.wait(report.session_id, timeout=10, poll=0.02)
    rows = {r.image_id: r for r in world.service.results(report.session_id)}
    labels = [rows[p.image_id].label for p in report.photos]
    assert labels == ["apple", None, "banana", "orange"]  # each input matched to its row


def test_the_record_names_a_fruit_only_when_the_model_knows_it(world: World) -> None:
    sure = world.service.classify_one(b"fruit:apple")
    unsure = world.service.classify_one(b"fruit:?")
    from fruitstream.service import FileResult

    known = FileResult("a.jpg", sure).to_dict()
    unknown = FileResult("b.jpg", unsure).to_dict()
    assert (known["label"], known["guess"], known["known"]) == ("apple", "apple", True)
    assert (unknown["label"], unknown["guess"], unknown["known"]) == (None, "apple", False)
    assert unknown["top_k"][0]["label"] == unknown["guess"]
