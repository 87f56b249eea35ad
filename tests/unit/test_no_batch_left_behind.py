"""No batch left behind: which heartbeats are trusted (a zombie, a reused pid, this very
process), the serving process's watch that replaces a dead worker, and readiness while
photos wait with nothing alive to classify them. Over the fakes, with real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fruitstream.entrypoints.api import create_app
from fruitstream.housekeeping import process_started, process_state
from fruitstream.pipeline import Upload
from fruitstream.service.health import is_alive, owner_is_dead
from tests.fakes import FakeWorld, fake_world

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="these rules read /proc (Linux)"
)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A live process of this machine, killed (and reaped) at the end."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _beat(pid: int, started: int | None) -> dict[str, object]:
    return {"pid": pid, "host": socket.gethostname(), "state": "running", "started": started}


def _zombie(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` and leave it unreaped: ``kill(pid, 0)`` still answers for it."""
    proc.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (process_state(proc.pid) or ("?", 0))[0] != "Z":
        assert time.monotonic() < deadline, "the child did not become a zombie"
        time.sleep(0.02)
    os.kill(proc.pid, 0)  # what the old check asked: it still says "alive"


def test_a_live_process_of_this_machine_is_trusted(child: subprocess.Popen[bytes]) -> None:
    assert is_alive(datetime.now(UTC), _beat(child.pid, process_started(child.pid)))


def test_a_zombie_is_dead_though_its_pid_answers(child: subprocess.Popen[bytes]) -> None:
    started = process_started(child.pid)
    _zombie(child)
    assert not is_alive(datetime.now(UTC), _beat(child.pid, started))
    assert owner_is_dead(f"{socket.gethostname()}:{child.pid}:1")  # its leases are freed


def test_a_pid_now_held_by_a_later_process_is_dead(child: subprocess.Popen[bytes]) -> None:
    started = process_started(child.pid)
    assert started is not None
    # The beat was written by an earlier process that had the same pid (a restart reused it).
    assert not is_alive(datetime.now(UTC), _beat(child.pid, started - 1))
    assert not is_alive(datetime.now(UTC), _beat(os.getpid(), (process_started() or 1) - 1))


def test_a_beat_of_this_process_counts_only_while_its_worker_runs() -> None:
    mine = _beat(os.getpid(), process_started())
    assert is_alive(datetime.now(UTC), mine)  # nobody here says otherwise
    assert is_alive(datetime.now(UTC), mine, me_running=True)
    assert not is_alive(datetime.now(UTC), mine, me_running=False)


def _photos(n: int) -> list[Upload]:
    return [Upload(f"p{i}.jpg", f"fruit:apple#{i}".encode()) for i in range(n)]


def test_a_fresh_beat_of_this_process_without_its_worker_does_not_stop_one(
    tmp_path: Path,
) -> None:
    """kill -9 of a server, restarted: the old process's last beat is fresh and, where the
    restart got the same pid, names this process; it must not stand for a worker."""
    world = fake_world(tmp_path)
    try:
        world.db.beat("before-the-restart", "worker", _beat(os.getpid(), process_started()))
        report = world.service.submit(_photos(3))
        assert report.classified_here
        assert world.service.wait(report.session_id, timeout=10, poll=0.05).complete
    finally:
        world.service.stop(timeout=5)


def _until(check: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_the_serving_process_replaces_a_killed_worker_without_a_new_submit(
    tmp_path: Path, child: subprocess.Popen[bytes]
) -> None:
    """A `fruitstream worker` (here: a live child that beats) is killed -9 while its batch
    waits: the serving process's watch starts a worker, and the batch finishes."""
    world: FakeWorld = fake_world(tmp_path)
    try:
        world.db.beat("worker-process", "worker", _beat(child.pid, process_started(child.pid)))
        world.service.workers.watch_seconds = 0.2  # the shipped 2 s, shortened for the test
        world.service.start()
        report = world.service.submit(_photos(5))
        assert not report.classified_here  # the other process is alive: nothing here
        time.sleep(0.5)
        assert world.service.progress(report.session_id).done == 0
        _zombie(child)
        assert _until(lambda: world.service.progress(report.session_id).complete, 15)
    finally:
        world.service.stop(timeout=5)


def test_ready_says_no_while_photos_wait_with_no_live_worker(tmp_path: Path) -> None:
    world = fake_world(tmp_path, start_workers=False)  # batches wait for a worker elsewhere
    with TestClient(create_app(world.service, tokens=[])) as client:
        assert client.get("/readyz").status_code == 200  # nothing waits
        files = [("files", ("a.jpg", b"fruit:apple", "image/jpeg"))]
        assert client.post("/v1/batches", files=files).status_code == 202
        assert client.get("/readyz").status_code == 503
        assert not world.service.ready()[0]
        # A worker comes: ready again once the queue is worked.
        assert world.service.ensure_worker()
        assert _until(lambda: client.get("/readyz").status_code == 200, 10)
    world.service.stop(timeout=5)
