"""Faults on the embedded set-up, with real processes: fuzzed files, kill -9 of the worker and
of ``submit`` at each step, a worker that stops while ``submit --wait`` waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fruitstream.adapters.local_queue import queue_table
from fruitstream.adapters.sql import SqlDatabase
from tests.conftest import mutation_corpus
from tests.faults.conftest import FaultRecord
from tests.helpers import Workers, photos, run_cli, run_json, wait_for

FUZZ_FILES = 60


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # The shipped lease (10 s) and a short stall time, so that repairs happen within the test.
    return {
        "FRUITSTREAM_DATA_DIR": str(tmp_path / "data"),
        "FRUITSTREAM_STALLED_SUBMIT_SECONDS": "3",
    }


@pytest.fixture
def workers(env: dict[str, str]) -> Iterator[Workers]:
    w = Workers(env)
    yield w
    w.stop_all()


def _db(env: dict[str, str]) -> SqlDatabase:
    return SqlDatabase.from_url(f"sqlite:///{env['FRUITSTREAM_DATA_DIR']}/fruitstream.db")


def _rows(env: dict[str, str], session: str) -> list[tuple[str, str, str]]:
    """``(image_id, filename, status)`` of every row of ``session``, straight from the table."""
    with _db(env).engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT image_id, filename, status FROM results WHERE session_id = :s"),
            {"s": session},
        )
        return [(r[0], r[1], r[2]) for r in found]


def fuzz_folder(dataset: Path, dest: Path, n: int = FUZZ_FILES) -> tuple[Path, set[str]]:
    """A folder of ``n`` mutated files, the crafted JPEG and five real photos; the real ones'
    names are returned."""
    photos(dataset, 5, dest, source="grocery/val")
    good = {p.name for p in dest.iterdir()}
    for name, data in mutation_corpus(n, seed=7).items():
        (dest / name).write_bytes(data)
    return dest, good


def test_fuzzed_files_through_classify_one_record_each(
    tmp_path: Path, dataset: Path, ledger: list[FaultRecord]
) -> None:
    folder, good = fuzz_folder(dataset, tmp_path / "fuzz")
    files = sorted(p.name for p in folder.iterdir())
    out = run_cli("classify", str(folder), "--json")
    assert "Traceback" not in out.stderr
    import json

    records = json.loads(out.stdout)
    names = Counter(Path(r["path"]).name for r in records)
    assert sorted(names) == files and set(names.values()) == {1}
    for r in records:
        assert r["error"] or r["guess"], r
        if Path(r["path"]).name in good:
            assert r["error"] is None
    ledger.append(FaultRecord("fuzzed files: classify", len(files) - len(good), len(files), 0, 0))


def test_fuzzed_files_through_submit_one_row_each(
    tmp_path: Path, dataset: Path, env: dict[str, str], ledger: list[FaultRecord]
) -> None:
    folder, good = fuzz_folder(dataset, tmp_path / "fuzz")
    files = sorted(p.name for p in folder.iterdir())
    out = run_cli("submit", str(folder), "--wait", "--timeout", "300", env=env)
    assert "Traceback" not in out.stderr
    session = out.stdout.splitlines()[0]
    rows = _rows(env, session)
    by_name = Counter(name for _, name, _ in rows)
    assert sorted(by_name) == files and set(by_name.values()) == {1}
    assert all(status == "ok" for _, name, status in rows if name in good)
    code, results = run_json("results", session, "--json", env=env)
    assert code == 0 and all(r["status"] == "ok" or r["error"] for r in results)
    ledger.append(
        FaultRecord(
            "fuzzed files: submit + worker",
            len(files) - len(good),
            len(files),
            len(files) - len(by_name),
            sum(by_name.values()) - len(by_name),
        )
    )


def _owner_rows(env: dict[str, str], pid: int) -> int:
    """Queue messages still leased to the worker process ``pid``."""
    with _db(env).engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(queue_table)
                .where(queue_table.c.lease_owner.like(f"%:{pid}:%"))
            ).scalar_one()
        )


@pytest.mark.slow
def test_kill_9_of_the_worker_three_times(
    tmp_path: Path, dataset: Path, env: dict[str, str], workers: Workers, ledger: list[FaultRecord]
) -> None:
    folder = photos(dataset, 300, tmp_path / "in")
    out = run_cli("submit", str(folder), "--queue-only", env=env)
    assert out.returncode == 0, out.stderr
    session = out.stdout.strip()
    recoveries = []
    proc = workers.start()
    for round_ in range(3):
        wait_for(lambda n=round_: len(_rows(env, session)) >= 40 * (n + 1), 180, "progress")
        wait_for(lambda p=proc: _owner_rows(env, p.pid) > 0, 30, "a batch in hand")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = time.monotonic()
        assert len(_rows(env, session)) < 300, "the worker finished before it could be killed"
        proc = workers.start()
        dead = workers.procs[-2].pid
        # Recovered: the dead worker's leased photos went to the new one (lease expiry).
        wait_for(lambda d=dead: _owner_rows(env, d) == 0, 60, "the dead worker's photos")
        recoveries.append(time.monotonic() - killed_at)
    wait_for(lambda: len(_rows(env, session)) >= 300, 300, "all 300 results")
    time.sleep(1.0)
    rows = _rows(env, session)
    ids = Counter(image_id for image_id, _, _ in rows)
    assert len(ids) == 300 and set(ids.values()) == {1}
    assert all(status == "ok" for *_, status in rows)
    assert max(recoveries) < 30, recoveries  # the 10 s lease, not 120 s
    ledger.append(
        FaultRecord(
            "kill -9 embedded worker (x3)",
            3,
            300,
            300 - len(ids),
            0,
            sorted(recoveries)[1],
        )
    )


_KILLED_SUBMIT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from fruitstream.config import load_settings
    from fruitstream.pipeline import Pipeline, Upload
    from fruitstream.bootstrap import build_service

    step, folder = sys.argv[1], Path(sys.argv[2])
    base = build_service(load_settings()).pipeline()

    def failpoint(at):
        if at == step:
            os.kill(os.getpid(), signal.SIGKILL)

    pipeline = Pipeline(
        base.store, base.publisher, base.results, base.sessions, base.limits,
        base.model_version, failpoint=failpoint,
    )
    uploads = [Upload(p.name, p) for p in sorted(folder.iterdir())]
    pipeline.submit(uploads)
    """
)


@pytest.mark.parametrize("step", ["session-recorded", "chunk-stored", "chunk-published"])
def test_kill_9_of_submit_at_each_step_converges(
    tmp_path: Path,
    dataset: Path,
    env: dict[str, str],
    workers: Workers,
    ledger: list[FaultRecord],
    step: str,
) -> None:
    folder = photos(dataset, 40, tmp_path / "in")  # two chunks: the kill hits the first
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_SUBMIT, step, str(folder)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [session] = _db(env).sessions()
    assert _db(env).progress(session.session_id).done < 40  # left half way
    killed_at = time.monotonic()
    workers.start()  # its housekeeping finishes the stalled submit by itself
    wait_for(lambda: _db(env).progress(session.session_id).complete, 120, "the session to converge")
    recovery = time.monotonic() - killed_at
    time.sleep(1.0)
    rows = _rows(env, session.session_id)
    ids = Counter(image_id for image_id, _, _ in rows)
    assert len(ids) == 40 and set(ids.values()) == {1}
    statuses = Counter(status for *_, status in rows)
    if step == "session-recorded":  # nothing was stored before the kill
        assert statuses == {"error": 40}
    else:  # the first chunk was stored (and maybe sent): it is classified, the rest too
        assert statuses["ok"] >= 32
    assert run_cli("repair", "--older-than", "0", env=env).stdout.strip() == "nothing to repair"
    ledger.append(FaultRecord(f"kill -9 submit at {step}", 1, 40, 40 - len(ids), 0, recovery))


def test_submit_wait_right_after_a_worker_stopped_does_not_hang(
    tmp_path: Path, dataset: Path, env: dict[str, str], workers: Workers
) -> None:
    proc = workers.start()
    wait_for(lambda: bool(_db(env).latest()), 60, "the worker's heartbeat")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    folder = photos(dataset, 5, tmp_path / "in")
    started = time.monotonic()
    out = run_cli("submit", str(folder), "--wait", "--timeout", "120", env=env)
    assert out.returncode == 0, out.stderr
    assert "no worker is running: classifying the photos in this process" in out.stderr
    assert "5 photos: 5 classified" in out.stdout
    assert time.monotonic() - started < 100


def test_queue_only_with_no_worker_times_out_clearly(
    tmp_path: Path, dataset: Path, env: dict[str, str]
) -> None:
    folder = photos(dataset, 3, tmp_path / "in")
    out = run_cli("submit", str(folder), "--queue-only", "--wait", "--timeout", "3", env=env)
    assert out.returncode == 1
    assert "no consumer is running: start `fruitstream worker`" in out.stderr
    assert "timed out after 3 s: 0 of 3 done; the session goes on" in out.stderr


def _submit_over_http(url: str, folder: Path) -> str:
    import httpx

    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in sorted(folder.iterdir())]
    answer = httpx.post(f"{url}/v1/batches", files=files, timeout=120)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["session_id"])


@pytest.mark.slow
def test_kill_9_of_the_server_right_after_its_202_then_a_restart_finishes_the_batch(
    tmp_path: Path, dataset: Path, env: dict[str, str], ledger: list[FaultRecord]
) -> None:
    """The killed server is left unreaped (a zombie whose pid still answers ``kill(pid, 0)``)
    and its last heartbeat is fresh: the restarted one must not take it for a worker."""
    from tests.integration.test_api_server import Server

    folder = photos(dataset, 100, tmp_path / "in")
    first = Server(env, host="127.0.0.1")
    session = _submit_over_http(first.url, folder)
    first.proc.send_signal(signal.SIGKILL)  # not waited for: a zombie until the end
    killed_at = time.monotonic()
    second = Server(env, host="127.0.0.1")
    try:
        wait_for(lambda: len(_rows(env, session)) >= 100, 120, "all 100 results")
        recovery = time.monotonic() - killed_at
    finally:
        second.stop()
        first.proc.wait()
    ids = Counter(image_id for image_id, _, _ in _rows(env, session))
    lost, twice = 100 - len(ids), sum(n - 1 for n in ids.values())
    ledger.append(
        FaultRecord("kill -9 API server after its 202, restart", 1, 100, lost, twice, recovery)
    )
    assert lost == 0 and twice == 0


@pytest.mark.slow
def test_kill_9_of_the_only_worker_while_the_server_serves_finishes_the_batch(
    tmp_path: Path, dataset: Path, env: dict[str, str], workers: Workers, ledger: list[FaultRecord]
) -> None:
    """`fruitstream worker` first, then the API (which then starts no worker of its own);
    the worker is killed -9 mid-batch: the server's watch takes over, no new submit needed."""
    from tests.integration.test_api_server import Server

    folder = photos(dataset, 300, tmp_path / "in")
    proc = workers.start()
    wait_for(lambda: any(k == "worker" for _, k, _, _ in _db(env).latest()), 60, "the worker")
    server = Server(env, host="127.0.0.1")
    try:
        session = _submit_over_http(server.url, folder)
        wait_for(lambda: len(_rows(env, session)) >= 40, 180, "progress")
        wait_for(lambda: _owner_rows(env, proc.pid) > 0, 30, "a batch in hand")
        proc.send_signal(signal.SIGKILL)  # left unreaped until the end: a zombie
        killed_at = time.monotonic()
        assert len(_rows(env, session)) < 300, "the worker finished before it could be killed"
        wait_for(lambda: len(_rows(env, session)) >= 300, 300, "all 300 results")
        recovery = time.monotonic() - killed_at
    finally:
        server.stop()
        proc.wait()
    ids = Counter(image_id for image_id, _, _ in _rows(env, session))
    lost, twice = 300 - len(ids), sum(n - 1 for n in ids.values())
    ledger.append(
        FaultRecord("kill -9 the only worker while the API serves", 1, 300, lost, twice, recovery)
    )
    assert lost == 0 and twice == 0
