"""Reliability logic with in-memory fakes and SQLite: one photo never fails another, leases,
sessions that always converge, secrets that never print."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image, ImageOps

from fruitstream.adapters.kafka import jaas_quote
from fruitstream.adapters.local_queue import SqlQueue
from fruitstream.adapters.sql import SqlDatabase
from fruitstream.config import MASK, load_settings, mask_url
from fruitstream.core.classifier import Classifier
from fruitstream.core.imaging import load_pixels
from fruitstream.dataset import expand_paths
from fruitstream.domain import ImageMessage, ResultRow, error_row, utcnow
from fruitstream.entrypoints.cli import clean
from fruitstream.entrypoints.spark_job import dotenv_text, executor_settings_file
from fruitstream.errors import ImageError, StorageError
from fruitstream.pipeline import Pipeline, Upload
from fruitstream.ports import Delivery, Health
from fruitstream.service.health import is_alive
from fruitstream.worker import MAX_ATTEMPTS, Worker, process_batch
from tests.conftest import crafted_exif_jpeg, jpeg_bytes, mutation_corpus
from tests.fakes import MemoryObjectStore, MemoryQueue


@pytest.fixture
def db(tmp_path: Path) -> SqlDatabase:
    return SqlDatabase.from_url(f"sqlite:///{tmp_path / 'r.db'}")


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


def test_an_error_row_never_replaces_an_ok_row(db: SqlDatabase) -> None:
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


def test_any_filename_is_stored_whole(db: SqlDatabase) -> None:
    name = "é" * 40 + "x" * 400 + ".jpg"
    msg = ImageMessage(str(uuid.uuid4()), "s3", "k", name, "0", utcnow())
    db.upsert([error_row(msg, "why", "m:1")])
    assert db.results("s3")[0].filename == name


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


def test_a_store_that_is_down_refuses_the_submit_and_records_nothing(db: SqlDatabase) -> None:
    store = FlakyStore()
    store.all_down = True
    pipeline = Pipeline(store, MemoryQueue(), db, db)
    with pytest.raises(StorageError, match="nothing submitted"):
        pipeline.submit([Upload("a.jpg", jpeg_bytes())])
    assert db.sessions() == []


def test_uploads_from_paths_are_read_one_at_a_time(db: SqlDatabase, tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(jpeg_bytes())
    store, queue = MemoryObjectStore(), MemoryQueue()
    paths[1].unlink()  # gone between listing and reading: that photo's error only
    report = Pipeline(store, queue, db, db).submit([Upload(p.name, p) for p in paths])
    assert len(report.queued) == 2 and "cannot read file" in report.rejected["1.jpg"]


def test_an_older_database_is_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE sessions (session_id VARCHAR(64) PRIMARY KEY, name VARCHAR(200)"
                " NOT NULL DEFAULT '', created_at DATETIME NOT NULL, submitted INTEGER NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TABLE queue (seq INTEGER PRIMARY KEY, image_id VARCHAR(64) NOT NULL,"
                " payload BLOB NOT NULL, enqueued_at FLOAT NOT NULL, leased_until FLOAT,"
                " lease_owner VARCHAR(100), attempts INTEGER NOT NULL DEFAULT 0)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO sessions VALUES ('old', 'kept', '2026-01-01 00:00:00', 0)")
        )
    db = SqlDatabase.from_url(url)
    assert db.get_session("old").name == "kept"
    report = Pipeline(MemoryObjectStore(), SqlQueue(db), db, db).submit(
        [Upload("a.jpg", jpeg_bytes())]
    )
    assert len(report.queued) == 1 and SqlQueue(db).take(5)[0].last_error is None


# --- input hygiene ----------------------------------------------------------------------------


def test_links_and_hidden_files_in_folders_are_skipped_and_reported(tmp_path: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.jpg").write_bytes(b"a")
    (tmp_path / "in" / "sub" / "b.jpg").write_bytes(b"b")
    (tmp_path / "in" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "in" / "passwd.jpg").symlink_to("/etc/passwd")
    (tmp_path / "in" / "linked").symlink_to(tmp_path / "in" / "sub")
    skipped: list[tuple[Path, str]] = []
    files = list(expand_paths([tmp_path / "in"], skipped))
    assert [f.name for f in files] == ["a.jpg", "b.jpg"]
    reasons = {p.name: why for p, why in skipped}
    assert reasons == {
        ".DS_Store": "hidden file",
        "passwd.jpg": "symbolic link, not followed",
        "linked": "symbolic link, not followed",
    }


def test_terminal_control_characters_are_shown_as_question_marks() -> None:
    assert clean("evil\x1b]0;pwned\x07\x9b2J.jpg") == "evil?]0;pwned??2J.jpg"


# --- secrets ----------------------------------------------------------------------------------


def test_passwords_in_url_queries_are_masked() -> None:
    url = "postgresql://fruit:pw1@db:5432/fruit?sslmode=verify-full&password=pw2&sslpassword=pw3"
    masked = mask_url(url)
    assert "pw1" not in masked and "pw2" not in masked and "pw3" not in masked
    assert masked.count(MASK) == 3 and "sslmode=verify-full" in masked
    assert (
        mask_url("postgresql://db/fruit?password=only") == f"postgresql://db/fruit?password={MASK}"
    )


def test_jaas_values_are_quoted_whatever_they_hold() -> None:
    assert jaas_quote('pa"ss\\word') == '"pa\\"ss\\\\word"'


def test_executor_settings_file_is_private_and_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fruitstream.adapters.kafka import KafkaSettings
    from fruitstream.adapters.s3 import S3Settings

    secret = 'se"cr\\et$x\nline'
    settings = load_settings(
        s3_secret_access_key=secret,
        database_url="postgresql://u:p%40ss@h/db",
        kafka_sasl_password="kafka-secret",
        storage="s3",
    )
    assert "kafka-secret" not in dotenv_text(settings)
    path = executor_settings_file(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for key in [k for k in os.environ if k.startswith("FRUITSTREAM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FRUITSTREAM_SETTINGS_FILE", str(path))
    again = load_settings()
    s3, kafka = S3Settings.of(again), KafkaSettings.of(again)
    assert s3.secret_access_key is not None
    assert s3.secret_access_key.get_secret_value() == secret
    assert again.sqlalchemy_url == "postgresql://u:p%40ss@h/db"
    assert again.storage == "s3" and kafka.sasl_password is None


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
