"""The embedded pipeline end to end with real processes: submit, workers, kill -9, SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fruitstream.adapters.local_queue import queue_table
from fruitstream.adapters.sql import SqlDatabase
from fruitstream.dataset import image_files
from tests.conftest import bad_images
from tests.helpers import Workers, photos, run_cli, run_json, wait_for


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"FRUITSTREAM_DATA_DIR": str(tmp_path / "data"), "FRUITSTREAM_LEASE_SECONDS": "3"}


def _db(env: dict[str, str]) -> SqlDatabase:
    return SqlDatabase.from_url(f"sqlite:///{env['FRUITSTREAM_DATA_DIR']}/fruitstream.db")


@pytest.fixture
def workers(env: dict[str, str]) -> Iterator[Workers]:
    w = Workers(env)
    yield w
    w.stop_all()


def _live_workers(env: dict[str, str], n: int) -> bool:
    try:
        return len(_db(env).latest()) >= n
    except Exception:
        return False


def _rows(env: dict[str, str], session: str | None = None) -> list[tuple[str, str]]:
    db = _db(env)
    q = "SELECT image_id, session_id FROM results"
    with db.engine.connect() as conn:
        rows = [(r[0], r[1]) for r in conn.execute(sa.text(q))]
    return [r for r in rows if session is None or r[1] == session]


def test_submit_wait_matches_classify(tmp_path: Path, dataset: Path, env: dict[str, str]) -> None:
    folder = photos(dataset, 6, tmp_path / "in")
    for fruit in ("banana", "lime"):
        shutil.copy(image_files(dataset / "grocery" / "val" / fruit)[0], folder / f"{fruit}.jpg")
    for name, data in bad_images().items():
        (folder / name).write_bytes(data)
    out = run_cli("submit", str(folder), "--wait", env=env)
    assert out.returncode == 1, out.stderr  # the empty file was refused at submit
    session = out.stdout.splitlines()[0].strip()
    assert "empty.jpg: empty file" in out.stderr
    assert "photos:" in out.stdout and "errors" in out.stdout

    code, rows = run_json("results", session, "--json", env=env)
    assert code == 0
    _, expected = run_json("classify", str(folder), "--json")
    by_name = {r["filename"]: r for r in rows}
    assert len(rows) == len(expected) == 8 + len(bad_images())
    for exp in expected:
        row = by_name[Path(exp["path"]).name]
        if exp["error"]:
            assert row["status"] == "error" and row["error"], row
        else:
            assert row["status"] == "ok"
            assert (row["label"], row["known"]) == (exp["guess"], exp["known"])
            assert row["confidence"] == pytest.approx(exp["confidence"], abs=1e-4)

    csv_path = tmp_path / "out.csv"
    assert run_cli("results", session, "--csv", str(csv_path), env=env).returncode == 0
    assert len(csv_path.read_text().strip().splitlines()) == 1 + len(rows)
    sessions = run_cli("sessions", env=env)
    assert session in sessions.stdout and f"{len(rows)}/{len(rows)} done" in sessions.stdout


@pytest.mark.slow
def test_kill_9_mid_session_loses_nothing_and_doubles_nothing(
    tmp_path: Path, dataset: Path, env: dict[str, str], workers: Workers
) -> None:
    folder = photos(dataset, 300, tmp_path / "in")
    first = workers.start()
    wait_for(lambda: _live_workers(env, 1), 60, "the first worker's heartbeat")
    out = run_cli("submit", str(folder), env=env)
    assert out.returncode == 0, out.stderr
    session = out.stdout.strip()
    wait_for(lambda: len(_rows(env, session)) >= 40, 120, "40 results")
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = len(_rows(env, session))
    assert done_before < 300, "the worker finished before it could be killed"

    workers.start()
    wait_for(lambda: len(_rows(env, session)) >= 300, 240, "all 300 results")
    time.sleep(1.0)
    rows = _rows(env, session)
    assert len(rows) == 300
    assert len({image_id for image_id, _ in rows}) == 300
    with _db(env).engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.count()).select_from(queue_table)).scalar_one()
    assert left == 0


@pytest.mark.slow
def test_two_submitters_two_workers_every_image_once(
    tmp_path: Path, dataset: Path, env: dict[str, str], workers: Workers
) -> None:
    a = photos(dataset, 40, tmp_path / "a")
    b = photos(dataset, 40, tmp_path / "b")
    workers.start()
    workers.start()
    wait_for(lambda: _live_workers(env, 2), 60, "two worker heartbeats")
    full_env = {**os.environ, **env}
    cmds = [[sys.executable, "-m", "fruitstream", "submit", str(p)] for p in (a, b)]
    procs = [subprocess.Popen(c, env=full_env, stdout=subprocess.PIPE, text=True) for c in cmds]
    sessions = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    wait_for(lambda: len(_rows(env)) >= 80, 240, "80 results")
    time.sleep(1.0)
    rows = _rows(env)
    assert len(rows) == 80 and len({r[0] for r in rows}) == 80
    assert sorted(s for _, s in rows) == sorted(sessions * 40)
    beats = _db(env).latest()
    assert len(beats) == 2
    assert all(int(str(info["processed"])) > 0 for *_, info in beats), beats


def test_sigterm_finishes_the_batch_in_hand(
    tmp_path: Path, dataset: Path, env: dict[str, str], workers: Workers
) -> None:
    folder = photos(dataset, 120, tmp_path / "in")
    env["FRUITSTREAM_LEASE_SECONDS"] = "600"  # nothing may come back through expiry
    workers.env["FRUITSTREAM_LEASE_SECONDS"] = "600"
    proc = workers.start()
    wait_for(lambda: _live_workers(env, 1), 60, "the worker's heartbeat")
    session = run_cli("submit", str(folder), env=env).stdout.strip()
    wait_for(lambda: len(_rows(env, session)) >= 20, 120, "20 results")
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "finishing the batch in hand" in output and "worker stopped" in output
    with _db(env).engine.connect() as conn:
        leased = conn.execute(
            sa.select(sa.func.count())
            .select_from(queue_table)
            .where(queue_table.c.leased_until.is_not(None))
        ).scalar_one()
        waiting = conn.execute(sa.select(sa.func.count()).select_from(queue_table)).scalar_one()
    assert leased == 0  # what it had taken, it finished
    assert len(_rows(env, session)) + waiting == 120


def test_status_reports_each_backend(env: dict[str, str]) -> None:
    out = run_cli("status", env=env)
    assert out.returncode == 0, out.stderr
    assert "ok    storage" in out.stdout
    assert "ok    queue" in out.stdout and "0 waiting" in out.stdout
    assert "ok    results database" in out.stdout
    assert "DOWN  workers" in out.stdout
