"""Reliability with the shipped model: any decoding error is one photo's error, one photo never
fails another, leases are renewed, a clean stop, killed submits, a huge file."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps

from fruitstream.adapters.local_queue import SqlQueue
from fruitstream.adapters.sql import SqlDatabase
from fruitstream.core.classifier import Classifier
from fruitstream.core.imaging import load_pixels
from fruitstream.domain import ImageMessage, utcnow
from fruitstream.errors import ImageError, StorageError
from fruitstream.pipeline import Pipeline, Upload
from fruitstream.ports import Delivery
from fruitstream.service.health import is_alive
from fruitstream.worker import MAX_ATTEMPTS, Worker, process_batch
from tests.conftest import crafted_exif_jpeg, jpeg_bytes, mutation_corpus
from tests.fakes import FlakyStore, MemoryObjectStore, MemoryQueue


def _message(store: MemoryObjectStore, name: str, data: bytes, session: str = "s") -> bytes:
    msg = ImageMessage(str(uuid.uuid4()), session, f"k/{name}", name, "0", utcnow())
    store.put(msg.object_key, data)
    return msg.to_json()


# --- decoding: any exception is one photo's error ----------------------------------------------


def test_the_crafted_jpeg_breaks_pillow_but_not_us(classifier: Classifier) -> None:
    data = crafted_exif_jpeg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TypeError):  # the regression input is real
            ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    # Its pixels are readable: it is classified, upright (orientation 6 turns 60x20 to 20x60).
    pred = classifier.classify(data)
    assert pred.label in classifier.labels
    pixels = load_pixels(data, classifier.bundle.preprocess)
    assert pixels.shape[:2] == (classifier.bundle.preprocess.input_size,) * 2


def test_mutation_corpus_every_file_gets_an_outcome(classifier: Classifier) -> None:
    corpus = mutation_corpus(300, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw_crashes = 0
        for data in corpus.values():
            try:
                ImageOps.exif_transpose(Image.open(io.BytesIO(data))).load()
            except (OSError, SyntaxError, ValueError):
                pass
            except Exception:
                raw_crashes += 1
        outcomes = classifier.classify_many(list(corpus.values()))
    assert raw_crashes >= 1, "the corpus no longer holds a file that crashes Pillow's path"
    assert len(outcomes) == len(corpus)
    for outcome in outcomes:
        assert not isinstance(outcome, ImageError) or str(outcome)  # a readable reason


# --- one photo never fails another ------------------------------------------------------------


def test_a_storage_error_retries_that_photo_only(classifier: Classifier) -> None:
    store = FlakyStore()
    good = [_message(store, f"{i}.jpg", jpeg_bytes()) for i in range(3)]
    bad = _message(store, "locked.jpg", jpeg_bytes())
    store.failing.add("k/locked.jpg")
    deliveries = [Delivery(raw, i) for i, raw in enumerate([*good, bad])]

    out = process_batch(deliveries, store, classifier)
    assert [r.status for r in out.rows] == ["ok"] * 3
    assert [(d.handle, "AccessDenied" in why) for d, why in out.retry] == [(3, True)]

    spark_like = process_batch(deliveries, store, classifier, can_retry=False)
    assert len(spark_like.rows) == 4 and not spark_like.retry
    locked = next(r for r in spark_like.rows if r.filename == "locked.jpg")
    assert locked.status == "error" and "AccessDenied" in (locked.error or "")

    store.all_down = True
    with pytest.raises(StorageError, match="object store is down"):
        process_batch(deliveries, store, classifier)


def test_worker_retries_a_failing_photo_and_gives_up_with_its_real_reason(
    db: SqlDatabase, classifier: Classifier
) -> None:
    store = FlakyStore()
    queue = SqlQueue(db, owner="w", lease_seconds=5)
    msgs = []
    for name in ("a.jpg", "b.jpg", "locked.jpg"):
        raw = _message(store, name, jpeg_bytes(), session="s1")
        msgs.append(ImageMessage.from_json(raw))
    store.failing.add("k/locked.jpg")
    assert queue.publish(msgs) == {}
    worker = Worker(queue, store, db, classifier, batch_size=8, poll_seconds=0.01)
    worker.retry_seconds = 0.0
    for _ in range(MAX_ATTEMPTS + 3):
        worker.run_once()
    rows = {r.filename: r for r in db.results("s1")}
    assert rows["a.jpg"].status == rows["b.jpg"].status == "ok"
    locked = rows["locked.jpg"]
    assert locked.status == "error"
    assert f"gave up after {MAX_ATTEMPTS} attempts" in (locked.error or "")
    assert "AccessDenied" in (locked.error or "")  # the real reason, not just "gave up"
    assert queue.depth() == 0


# --- leases -----------------------------------------------------------------------------------


def test_leases_are_renewed_while_a_slow_batch_is_worked_on(
    db: SqlDatabase, classifier: Classifier
) -> None:
    store = FlakyStore()
    raws = [_message(store, f"{i}.jpg", jpeg_bytes(), session="s4") for i in range(2)]
    SqlQueue(db).publish([ImageMessage.from_json(r) for r in raws])
    store.delay = 1.2  # each read outlasts the 0.6 s lease several times over
    slow = Worker(SqlQueue(db, owner="slow", lease_seconds=0.6), store, db, classifier)
    slow.lease_seconds = 0.6
    other = SqlQueue(db, owner="other", lease_seconds=30)
    stolen: list[Delivery] = []
    runner = threading.Thread(target=slow.run_once)
    runner.start()
    time.sleep(0.3)  # the slow worker takes the batch first
    deadline = time.monotonic() + 2.0
    while runner.is_alive() and time.monotonic() < deadline:
        stolen += other.take(10)
        time.sleep(0.1)
    runner.join()
    assert stolen == []
    assert len(db.results("s4")) == 2 and SqlQueue(db).depth() == 0


def test_a_clean_stop_says_so_and_a_dead_pid_is_not_alive(
    db: SqlDatabase, classifier: Classifier
) -> None:
    worker = Worker(MemoryQueue(), MemoryObjectStore(), db, classifier, heartbeats=db)
    stop = threading.Event()
    stop.set()
    worker.run(stop)
    [(_name, _kind, beat_at, info)] = db.latest()
    assert info["state"] == "stopped" and not is_alive(beat_at, info)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_out())
    gone = {**info, "state": "running", "pid": int(dead.stdout)}
    assert not is_alive(beat_at, gone)
    assert is_alive(beat_at, {**gone, "pid": os.getpid()})


def _out() -> dict[str, Any]:
    return {"capture_output": True, "text": True, "check": True}


# --- submit: sessions always converge --------------------------------------------------------


class Killed(BaseException):
    """Stands for kill -9 at a failpoint: nothing after it runs."""


@pytest.mark.parametrize("step", ["session-recorded", "chunk-stored", "chunk-published"])
def test_a_submit_killed_at_any_step_is_finished_by_repair(
    db: SqlDatabase, classifier: Classifier, step: str
) -> None:
    store, queue = MemoryObjectStore(), MemoryQueue()

    def die(at: str) -> None:
        if at == step:
            raise Killed(at)

    pipeline = Pipeline(store, queue, db, db, failpoint=die, model_version="m:1")
    uploads = [Upload(f"{i}.jpg", jpeg_bytes()) for i in range(5)]
    with pytest.raises(Killed):
        pipeline.submit(uploads)
    [session] = db.sessions()
    assert Pipeline(store, queue, db, db).repair(older_than=60) == {}  # not stalled yet
    settled = Pipeline(store, queue, db, db, model_version="m:1").repair(older_than=0)
    assert session.session_id in settled
    worker = Worker(queue, store, db, classifier, batch_size=8)
    while worker.run_once():
        pass
    rows = db.results(session.session_id)
    assert len(rows) == 5 and len({r.image_id for r in rows}) == 5
    assert db.progress(session.session_id).complete
    if step == "session-recorded":  # nothing was stored: each photo says so
        assert all("interrupted before this photo was stored" in (r.error or "") for r in rows)
    else:
        assert all(r.status == "ok" for r in rows)
    assert Pipeline(store, queue, db, db).repair(older_than=0) == {}  # converged: idempotent


@pytest.mark.model
def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB that costs no disk
    probe = (
        "import resource, subprocess, sys; "
        "out = subprocess.run([sys.executable, '-m', 'fruitstream', 'classify', '--json', "
        "sys.argv[1]], capture_output=True, text=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(out.stdout)"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(huge)], **_out())
    peak_kb, _, records = done.stdout.partition("\n")
    assert "over the limit" in records and "1,073,741,824 bytes" in records
    assert int(peak_kb) < 400 * 1024, f"{int(peak_kb) // 1024} MB: the file was read"
