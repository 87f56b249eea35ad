"""Faults on the real stack (SeaweedFS, Kafka, PostgreSQL, Spark standalone): fuzzed files,
an unreachable store, a long file name, broker and database restarts while the job runs,
secrets, and a two-worker cluster losing an executor and then its driver."""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from fruitstream.adapters.sql import SqlDatabase
from fruitstream.config import Settings
from tests.faults.conftest import FaultRecord
from tests.faults.test_embedded_faults import fuzz_folder
from tests.helpers import photos, run_cli, wait_for
from tests.stack import REPO, SparkJob, stack_env

pytestmark = pytest.mark.distributed


def _stack(*command: str) -> None:
    subprocess.run([str(REPO / "scripts" / "stack"), *command], check=True, timeout=300)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = stack_env()
    env["FRUITSTREAM_KAFKA_TOPIC"] = f"fruit-images-faults-{uuid.uuid4().hex[:8]}"
    env["FRUITSTREAM_SPARK_CHECKPOINT"] = str(tmp_path_factory.mktemp("checkpoint"))
    env["FRUITSTREAM_SPARK_MAX_OFFSETS_PER_TRIGGER"] = "64"
    return env


@pytest.fixture(scope="module")
def job(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkJob]:
    spark = SparkJob(stack, tmp_path_factory.mktemp("spark") / "job.log")
    spark.start()
    yield spark
    spark.kill()


def _db(env: dict[str, str]) -> SqlDatabase:
    return SqlDatabase.from_url(env["FRUITSTREAM_DATABASE_URL"])


def _names(env: dict[str, str], session: str) -> Counter[str]:
    return Counter(r.filename for r in _db(env).results(session))


def _count(env: dict[str, str], session: str) -> int:
    try:
        return _db(env).progress(session).done
    except Exception:  # the database is restarting
        return -1


def _submit(folder: Path, env: dict[str, str]) -> str:
    out = run_cli("submit", str(folder), env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[0]


def _settle(env: dict[str, str], session: str, n: int, timeout: float) -> Counter[str]:
    wait_for(lambda: _count(env, session) >= n, timeout, f"{n} results of {session}")
    time.sleep(3)  # anything late (a duplicate) would land now
    return _names(env, session)


def test_fuzzed_files_through_the_spark_job(
    tmp_path: Path,
    dataset: Path,
    stack: dict[str, str],
    job: SparkJob,
    ledger: list[FaultRecord],
) -> None:
    folder, good = fuzz_folder(dataset, tmp_path / "fuzz", n=40)
    files = sorted(p.name for p in folder.iterdir())
    session = _submit(folder, stack)
    names = _settle(stack, session, len(files), 300)
    assert sorted(names) == files and set(names.values()) == {1}
    rows = {r.filename: r for r in _db(stack).results(session)}
    assert all(rows[name].status == "ok" for name in good)
    assert all(r.status == "ok" or r.error for r in rows.values())
    assert job.alive, "the job died on a fuzzed file"
    ledger.append(FaultRecord("fuzzed files: Spark job", len(files) - len(good), len(files), 0, 0))


def test_unreachable_store_at_submit_is_a_clear_error_and_no_session(
    tmp_path: Path, dataset: Path, stack: dict[str, str], ledger: list[FaultRecord]
) -> None:
    before = len(_db(stack).sessions(limit=10_000))
    down = {**stack, "FRUITSTREAM_S3_ENDPOINT_URL": "http://127.0.0.1:9"}
    out = run_cli("submit", str(photos(dataset, 3, tmp_path / "in")), env=down, timeout=120)
    assert out.returncode == 2
    assert "nothing submitted: the object store is down" in out.stderr
    assert "Traceback" not in out.stderr
    assert len(_db(stack).sessions(limit=10_000)) == before
    ledger.append(FaultRecord("S3 unreachable at submit", 1, 3, 0, 0))


def test_a_404_character_filename_gets_its_row_on_postgresql(
    tmp_path: Path, dataset: Path, stack: dict[str, str], job: SparkJob
) -> None:
    from fruitstream.bootstrap import build_service
    from fruitstream.pipeline import Upload

    settings = Settings(**{k.removeprefix("FRUITSTREAM_").lower(): v for k, v in stack.items()})
    photo = photos(dataset, 1, tmp_path / "in")
    data = next(photo.iterdir()).read_bytes()
    long_name = "a" * 400 + ".jpg"
    uploads = [Upload(long_name, data), Upload("short.jpg", data)]
    report = build_service(settings).pipeline().submit(uploads)
    names = _settle(stack, report.session_id, 2, 180)
    assert names == {long_name: 1, "short.jpg": 1}
    assert all(r.status == "ok" for r in _db(stack).results(report.session_id))


def _restart_while_running(
    tmp_path: Path,
    dataset: Path,
    stack: dict[str, str],
    job: SparkJob,
    command: str,
) -> tuple[Counter[str], float]:
    folder = photos(dataset, 200, tmp_path / "in")
    session = _submit(folder, stack)
    wait_for(lambda: _count(stack, session) >= 30, 300, "the job under way")
    restarted_at = time.monotonic()
    _stack(command)
    seen = _count(stack, session)
    wait_for(lambda: _count(stack, session) > max(seen, 30), 300, "progress after the restart")
    recovery = time.monotonic() - restarted_at
    names = _settle(stack, session, 200, 600)
    assert job.alive, "the job did not survive the restart"
    return names, recovery


@pytest.mark.parametrize(
    ("command", "fault"),
    [
        ("restart-postgres", "PostgreSQL restart mid-stream"),
        ("restart-kafka", "Kafka broker restart mid-stream"),
    ],
)
def test_a_backend_restart_while_the_job_runs(
    tmp_path: Path,
    dataset: Path,
    stack: dict[str, str],
    job: SparkJob,
    ledger: list[FaultRecord],
    command: str,
    fault: str,
) -> None:
    names, recovery = _restart_while_running(tmp_path, dataset, stack, job, command)
    assert len(names) == 200 and set(names.values()) == {1}
    ledger.append(FaultRecord(fault, 1, 200, 0, 0, recovery))


def _secrets(env: dict[str, str]) -> list[str]:
    password = re.search(r"://[^:]+:([^@]+)@", env["FRUITSTREAM_DATABASE_URL"])
    assert password is not None
    return [
        env["FRUITSTREAM_S3_SECRET_ACCESS_KEY"],
        env["FRUITSTREAM_S3_ACCESS_KEY_ID"],
        password.group(1),
    ]


def test_no_secret_in_process_lists_logs_config_or_the_spark_ui(
    stack: dict[str, str], job: SparkJob
) -> None:
    wait_for(lambda: any(k == "spark" for _, k, _, _ in _db(stack).latest()), 120, "the job")
    beats = [info for _, kind, _, info in _db(stack).latest() if kind == "spark"]
    info = next(i for i in beats if i.get("state") == "running" and i.get("pid") == job.proc.pid)  # type: ignore[union-attr]
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    assert "CoarseGrainedExecutorBackend" in ps  # the executors are there to be looked at
    ui = f"{info['ui']}/api/v1/applications/{info['app_id']}/environment"
    with urllib.request.urlopen(ui, timeout=30) as page:
        environment = page.read().decode()
    assert "spark.executorEnv.FRUITSTREAM_SETTINGS_FILE" in environment
    config = run_cli("config", env=stack).stdout
    assert "FRUITSTREAM_DATABASE_URL=postgresql+psycopg://fruitstream:**********@" in config
    for secret in _secrets(stack):
        assert secret not in ps, "a secret is on a command line"
        assert secret not in environment, "a secret is on the Spark UI's environment page"
        assert secret not in job.output(), "a secret is in the job's logs"
        assert secret not in config


def _executor_pids(work_dir: str) -> list[int]:
    """Executor JVMs of the worker whose work folder is ``work_dir`` (they run inside it)."""
    ps = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True)
    pids = []
    for line in ps.stdout.splitlines():
        if "CoarseGrainedExecutorBackend" not in line:
            continue
        pid = int(line.split()[0])
        try:
            if f"/{work_dir}/" in os.readlink(f"/proc/{pid}/cwd"):
                pids.append(pid)
        except OSError:  # it ended meanwhile
            continue
    return pids


@pytest.mark.slow
def test_two_workers_lose_an_executor_then_the_driver(
    tmp_path: Path,
    dataset: Path,
    stack: dict[str, str],
    job: SparkJob,
    ledger: list[FaultRecord],
) -> None:
    job.kill()  # its executors hold the first worker's cores: this test's job needs them
    _stack("worker2-up")
    env = {
        **stack,
        "FRUITSTREAM_KAFKA_TOPIC": stack["FRUITSTREAM_KAFKA_TOPIC"] + "-two",
        "FRUITSTREAM_SPARK_CHECKPOINT": str(tmp_path / "checkpoint"),
        "FRUITSTREAM_SPARK_MIN_PARTITIONS": "3",
    }
    folder = photos(dataset, 600, tmp_path / "in")
    session = _submit(folder, env)
    two = SparkJob(env, tmp_path / "job.log")
    two.start()
    try:
        wait_for(lambda: bool(_executor_pids("spark-work2")), 180, "an executor on worker 2")
        wait_for(lambda: _count(env, session) >= 60, 300, "the job under way")
        killed_at = time.monotonic()
        for pid in _executor_pids("spark-work2"):
            os.kill(pid, 9)
        seen = _count(env, session)
        wait_for(lambda: _count(env, session) > seen + 20, 300, "progress without the executor")
        executor_recovery = time.monotonic() - killed_at
        wait_for(lambda: _count(env, session) >= 250, 600, "250 results")
        two.kill()  # the driver, and its whole process group
        done = _count(env, session)
        assert done < 600, "the job finished before the driver could be killed"
        restarted_at = time.monotonic()
        two.start()  # from the same checkpoint
        wait_for(lambda: _count(env, session) > done, 300, "progress after the driver restart")
        driver_recovery = time.monotonic() - restarted_at
        names = _settle(env, session, 600, 900)
    finally:
        two.kill()
        _stack("worker2-down")
    assert len(names) == 600 and set(names.values()) == {1}
    ledger.append(
        FaultRecord("Spark, 2 workers: executor kill -9", 1, 600, 0, 0, executor_recovery)
    )
    ledger.append(FaultRecord("Spark, 2 workers: driver kill -9", 1, 600, 0, 0, driver_recovery))
