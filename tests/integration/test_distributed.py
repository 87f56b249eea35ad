"""The distributed pipeline on real servers started by ``scripts/stack up``: SeaweedFS (S3),
Kafka (KRaft), PostgreSQL and a Spark standalone cluster running ``fruitstream spark-job``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fruitstream.dataset import image_files
from tests.helpers import run_cli, run_json
from tests.stack import REPO, SparkJob, stack_env

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Stack settings with a topic and checkpoint of this test module's own."""
    env = stack_env()
    tag = uuid.uuid4().hex[:8]
    env["FRUITSTREAM_KAFKA_TOPIC"] = f"fruit-images-test-{tag}"
    env["FRUITSTREAM_SPARK_CHECKPOINT"] = str(tmp_path_factory.mktemp("checkpoint"))
    env["FRUITSTREAM_SPARK_TRIGGER_SECONDS"] = "0.5"
    return env


@pytest.fixture(scope="module")
def spark_job(
    stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SparkJob]:
    job = SparkJob(stack, tmp_path_factory.mktemp("spark") / "job.log")
    job.start()
    yield job
    job.kill()


def _photos(dataset: Path, n: int, dest: Path, source: str = "grocery") -> Path:
    dest.mkdir(parents=True)
    pool = image_files(dataset / source / ("val" if source == "grocery" else "test"))
    for i in range(n):
        src = pool[(i * 5) % len(pool)]
        shutil.copy(src, dest / f"{i:04d}-{src.name}")
    return dest


def _results(session: str, env: dict[str, str]) -> list[dict[str, object]]:
    code, rows = run_json("results", session, "--json", env=env)
    assert code == 0
    return list(rows)


def _wait_rows(
    session: str, env: dict[str, str], n: int, timeout: float
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        rows = _results(session, env)
        if len(rows) >= n:
            return rows
        time.sleep(2)
    raise AssertionError(f"{len(rows)} of {n} results after {timeout} s")


def _submit(folder: Path, env: dict[str, str]) -> str:
    out = run_cli("submit", str(folder), env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[0]


def test_fifty_photos_through_s3_kafka_spark_postgres(
    tmp_path: Path, dataset: Path, stack: dict[str, str], spark_job: SparkJob
) -> None:
    folder = _photos(dataset, 50, tmp_path / "in")
    session = _submit(folder, stack)
    rows = _wait_rows(session, stack, 50, 300)
    assert len({r["image_id"] for r in rows}) == 50
    _, expected = run_json("classify", str(folder), "--json")
    by_name = {r["filename"]: r for r in rows}
    for exp in expected:
        row = by_name[Path(exp["path"]).name]
        assert row["status"] == "ok", row
        assert (row["label"], row["known"]) == (exp["guess"], exp["known"])
        assert row["confidence"] == pytest.approx(exp["confidence"], abs=1e-4)
        assert str(row["object_key"]).startswith("uploads/")
    status = run_cli("status", env=stack).stdout
    assert "ok    storage            S3 bucket" in status
    assert "ok    queue              Kafka" in status and "(3 partitions)" in status
    assert "ok    results database   postgresql" in status
    assert "ok    workers" in status
    # The job ran on the standalone cluster, not in local mode.
    assert stack["FRUITSTREAM_SPARK_MASTER"].startswith("spark://")


def test_a_batch_through_the_http_api_on_the_real_stack(
    dataset: Path, stack: dict[str, str], spark_job: SparkJob
) -> None:
    import httpx

    from tests.integration.test_api_server import Server

    token = "distributed-api-token"
    server = Server({**stack, "FRUITSTREAM_API_TOKENS": token}, host="127.0.0.1")
    auth = {"authorization": f"Bearer {token}"}
    try:
        ready = httpx.get(f"{server.url}/readyz", headers=auth).json()
        assert ready["ready"] and "S3 bucket" in ready["checks"][0]["detail"]
        anonymous = httpx.get(f"{server.url}/readyz").json()  # no hosts or paths without a token
        assert anonymous["ready"] and anonymous["checks"][0]["detail"] == "ok"
        pool = image_files(dataset / "grocery" / "val")[:6]
        files = [("files", (p.name, p.read_bytes())) for p in pool]
        batch = httpx.post(f"{server.url}/v1/batches", files=files, headers=auth, timeout=60)
        assert batch.status_code == 202, batch.text
        sid = batch.json()["session_id"]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if httpx.get(f"{server.url}/v1/batches/{sid}", headers=auth).json()["complete"]:
                break
            time.sleep(1)
        rows = httpx.get(f"{server.url}/v1/batches/{sid}/results", headers=auth).json()
    finally:
        server.stop()
    assert sorted(r["filename"] for r in rows) == sorted(p.name for p in pool)
    assert all(r["status"] == "ok" and r["object_key"].startswith("uploads/") for r in rows)
    assert rows == _results(sid, stack)  # the CLI reads the same rows from PostgreSQL


def test_poison_messages_become_error_rows_and_the_query_keeps_running(
    tmp_path: Path, dataset: Path, stack: dict[str, str], spark_job: SparkJob
) -> None:
    from confluent_kafka import Producer

    session = str(uuid.uuid4())
    ids = {name: str(uuid.uuid4()) for name in ("schema", "missing", "corrupt")}
    now = "2026-01-01T00:00:00+00:00"

    def message(image_id: str, key: str, schema: int = 1) -> bytes:
        return json.dumps(
            {
                "image_id": image_id, "session_id": session, "object_key": key,
                "filename": key.rsplit("/", 1)[-1], "content_sha256": "0",
                "submitted_at": now, "schema": schema,
            }
        ).encode()  # fmt: skip

    # A corrupt image stored where the job will look for it.
    from fruitstream.bootstrap import build_store
    from fruitstream.config import Settings

    settings = Settings(**{k.removeprefix("FRUITSTREAM_").lower(): v for k, v in stack.items()})
    build_store(settings).put("poison/corrupt.jpg", b"\xff\xd8\xff garbage")
    producer = Producer({"bootstrap.servers": stack["FRUITSTREAM_KAFKA_BOOTSTRAP_SERVERS"]})
    topic = stack["FRUITSTREAM_KAFKA_TOPIC"]
    producer.produce(topic, key=b"bad-json", value=b"{this is not json")
    producer.produce(topic, value=message(ids["schema"], "poison/x.jpg", schema=99))
    producer.produce(topic, value=message(ids["missing"], "poison/not-there.jpg"))
    producer.produce(topic, value=message(ids["corrupt"], "poison/corrupt.jpg"))
    assert producer.flush(30) == 0

    # Rows without a session record: read them straight from the results table.
    from fruitstream.adapters.sql import SqlDatabase

    db = SqlDatabase.from_url(settings.sqlalchemy_url)
    deadline = time.monotonic() + 180
    rows = []
    while time.monotonic() < deadline:
        rows = db.results(session)
        if len(rows) >= 3:
            break
        time.sleep(2)
    by_id = {r.image_id: r for r in rows}
    assert set(by_id) == set(ids.values())
    assert all(r.status == "error" for r in rows)
    assert "unsupported message schema 99" in (by_id[ids["schema"]].error or "")
    assert "does not exist" in (by_id[ids["missing"]].error or "")
    assert by_id[ids["corrupt"]].error
    assert "skipped message without an image id" in spark_job.output()

    # And the query is still running: a good batch after the poison is classified.
    folder = _photos(dataset, 3, tmp_path / "after")
    after = _submit(folder, stack)
    assert all(r["status"] == "ok" for r in _wait_rows(after, stack, 3, 120))


def test_kafka_restart_during_submit_loses_nothing(
    tmp_path: Path, dataset: Path, stack: dict[str, str], spark_job: SparkJob
) -> None:
    folder = _photos(dataset, 200, tmp_path / "in", source="studio")
    restart = threading.Timer(
        1.0, lambda: subprocess.run([str(REPO / "scripts" / "stack"), "restart-kafka"], check=True)
    )
    restart.start()
    out = run_cli("submit", str(folder), env=stack, timeout=600)
    restart.join()
    session = out.stdout.strip().splitlines()[0]
    rows = _wait_rows(session, stack, 200, 400)
    assert len({r["image_id"] for r in rows}) == 200
    not_sent = [r for r in rows if "could not be queued" in str(r["error"] or "")]
    # Whatever Kafka did not take is reported by the submitter, by name, and recorded.
    for r in not_sent:
        assert f"{r['filename']}: could not be queued" in out.stderr
    assert out.returncode == (1 if not_sent else 0)
    assert sum(r["status"] == "ok" for r in rows) == 200 - len(not_sent)


def test_killing_the_driver_mid_session_keeps_one_row_per_photo(
    tmp_path: Path, dataset: Path, stack: dict[str, str], spark_job: SparkJob
) -> None:
    # The one local worker has two cores: the module's job must free them for this one.
    spark_job.kill()
    env = {
        **stack,
        "FRUITSTREAM_KAFKA_TOPIC": stack["FRUITSTREAM_KAFKA_TOPIC"] + "-kill",
        "FRUITSTREAM_SPARK_CHECKPOINT": str(tmp_path / "checkpoint"),
        "FRUITSTREAM_SPARK_MAX_OFFSETS_PER_TRIGGER": "64",
    }
    folder = _photos(dataset, 500, tmp_path / "in", source="studio")
    session = _submit(folder, env)
    job = SparkJob(env, tmp_path / "job.log")
    job.start()
    try:
        _wait_rows(session, env, 60, 300)
        job.kill()
        done = len(_results(session, env))
        assert done < 500, "the job finished before it could be killed"
        job.start()  # from the same checkpoint
        rows = _wait_rows(session, env, 500, 600)
    finally:
        job.kill()
    time.sleep(3)
    rows = _results(session, env)
    assert len(rows) == 500
    assert len({r["image_id"] for r in rows}) == 500


def test_credentials_never_appear_in_output(
    tmp_path: Path, dataset: Path, stack: dict[str, str], spark_job: SparkJob
) -> None:
    secrets = [
        stack["FRUITSTREAM_S3_SECRET_ACCESS_KEY"],
        stack["FRUITSTREAM_S3_ACCESS_KEY_ID"],
        stack["FRUITSTREAM_DATABASE_URL"].split(":")[2].split("@")[0],  # the password
    ]
    outputs = [run_cli("config", env=stack), run_cli("status", env=stack)]
    wrong = {**stack, "FRUITSTREAM_S3_SECRET_ACCESS_KEY": secrets[0][::-1] + "x"}
    folder = _photos(dataset, 2, tmp_path / "in")
    outputs.append(run_cli("submit", str(folder), env=wrong))  # refused by S3: a clear error
    bad_db = {**stack, "FRUITSTREAM_DATABASE_URL": stack["FRUITSTREAM_DATABASE_URL"].replace(
        "@127.0.0.1", "x@127.0.0.1")}  # fmt: skip
    outputs.append(run_cli("sessions", env=bad_db))
    text = "\n".join(o.stdout + o.stderr for o in outputs) + spark_job.output()
    assert "**********" in outputs[0].stdout
    assert "nothing submitted: the object store is down" in outputs[2].stderr
    assert outputs[3].returncode == 2 and "results database error" in outputs[3].stderr
    for secret in [*secrets, secrets[0][::-1] + "x"]:
        assert secret not in text


def test_a_version_activated_in_postgresql_changes_the_running_spark_jobs_answers(
    tmp_path: Path, dataset: Path, stack: dict[str, str], spark_job: SparkJob
) -> None:
    """Papaya taught on the stack (labels in PostgreSQL, photos in S3), adapted and activated
    from another process: the Spark job, never restarted, answers papaya from the next
    micro-batches on, and the shipped model's answers again after ``models activate base``."""
    env = {**stack, "FRUITSTREAM_DATASET_DIR": str(dataset)}
    if not spark_job.alive:  # the driver-kill test above stops the module's job
        spark_job.start()
    assert spark_job.proc is not None
    pid = spark_job.proc.pid
    train = [
        p for p in image_files(dataset / "other-fruit" / "train") if p.name.startswith("papaya")
    ]
    teach = tmp_path / "teach" / "papaya"
    teach.mkdir(parents=True)
    for p in train[::3][:10]:
        shutil.copy(p, teach / p.name)
    held_out = tmp_path / "held-out"
    held_out.mkdir()
    for p in image_files(dataset / "other-fruit" / "test"):
        if p.name.startswith("papaya"):
            shutil.copy(p, held_out / p.name)
    n = len(list(held_out.iterdir()))

    def papaya_share() -> tuple[float, set[str]]:
        rows = _wait_rows(_submit(held_out, env), env, n, 300)
        return sum(r["label"] == "papaya" for r in rows) / n, {
            str(r["model_version"]) for r in rows
        }

    share, versions = papaya_share()
    assert share == 0 and not any("+a" in v for v in versions)
    assert run_cli("teach", str(tmp_path / "teach"), env=env).returncode == 0
    try:
        adapted = run_cli("adapt", "--force", "--json", env=env, timeout=600)
        assert adapted.returncode == 0, adapted.stderr
        version = json.loads(adapted.stdout)["version"]
        time.sleep(2)  # one follow period of the executors, at most
        share, versions = papaya_share()
        # ``name:version+a1``, or ``+a1+fp32`` where this CPU runs the fp32 graph.
        assert share >= 0.75 and all(version in v.split("+")[1:] for v in versions), versions
    finally:
        assert run_cli("models", "activate", "base", env=env).returncode == 0
    time.sleep(2)
    share, versions = papaya_share()
    assert share == 0 and not any("+a" in v for v in versions)
    assert spark_job.alive and spark_job.proc.pid == pid  # the same job all along


def test_a_label_tapped_in_the_app_reaches_postgresql(
    tmp_path: Path, dataset: Path, stack: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app over the stack: one tap on a fruit under a photo's answer, and the label is in
    PostgreSQL (read back by another process), its photo in S3 under ``labels/<sha256>``."""
    import hashlib

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    for key, value in stack.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FRUITSTREAM_DATA_DIR", str(tmp_path / "data"))
    data = image_files(dataset / "grocery" / "val" / "kiwi")[0].read_bytes()
    app = AppTest.from_file(
        str(REPO / "src/fruitstream/entrypoints/ui/app.py"), default_timeout=120
    )
    try:
        app.run()
        app.file_uploader(key="upload").set_value(("kiwi.jpg", data, "image/jpeg"))
        app.run()
        pick = next(b for b in app.button if b.key and b.key.startswith("upload-pick-"))
        pick.click()
        app.run()
        assert not app.exception
    finally:
        st.cache_resource.clear()
    sha = hashlib.sha256(data).hexdigest()
    code, labels = run_json("labels", "--json", env=stack)
    mine = [x for x in labels if x["content_sha256"] == sha]
    assert code == 0 and len(mine) == 1
    assert mine[0]["source"] == "app" and mine[0]["label"] == pick.key.removeprefix("upload-pick-")
    assert mine[0]["object_key"].startswith(f"labels/{sha}")
    assert "postgresql" in stack["FRUITSTREAM_DATABASE_URL"]
