"""Reliability logic with in-memory fakes and SQLite: a store that is down, uploads read one at
a time, older databases migrated, input hygiene, secrets that never print (with the model:
tests/integration/test_reliability_model.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa

from fruitstream.adapters.kafka import jaas_quote
from fruitstream.adapters.local_queue import SqlQueue
from fruitstream.adapters.sql import SqlDatabase
from fruitstream.config import MASK, load_settings, mask_url
from fruitstream.dataset import expand_paths
from fruitstream.entrypoints.cli import clean
from fruitstream.entrypoints.spark_job import dotenv_text, executor_settings_file
from fruitstream.errors import StorageError
from fruitstream.pipeline import Pipeline, Upload
from tests.conftest import jpeg_bytes
from tests.fakes import FlakyStore, MemoryObjectStore, MemoryQueue


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
