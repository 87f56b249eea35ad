"""``fruitstream serve`` as a real server process: it binds where it says, answers /readyz,
classifies a photo and runs a batch over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fruitstream.dataset import image_files


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, env: dict[str, str], host: str = "0.0.0.0") -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fruitstream",
                "serve",
                "--host",
                host,
                "--port",
                str(self.port),
            ],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the server did not answer: {self.proc.communicate()}")

    def stop(self) -> tuple[str, str]:
        self.proc.terminate()
        return self.proc.communicate(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server({"FRUITSTREAM_DATA_DIR": str(tmp_path / "data")})
    yield s
    s.stop()


def _bound_to(port: int) -> set[str]:
    """IPv4 addresses listening on ``port``, from the kernel's socket table."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_without_tokens_it_binds_to_loopback_only_and_says_so(server: Server) -> None:
    assert _bound_to(server.port) == {"127.0.0.1"}
    out, err = server.stop()
    assert "no FRUITSTREAM_API_TOKENS configured: binding to 127.0.0.1, not 0.0.0.0" in err
    assert "no authentication" in out


def test_a_photo_and_a_batch_over_http(server: Server, dataset: Path) -> None:
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"]
    photo = image_files(dataset / "grocery" / "val" / "pineapple")[0]
    one = httpx.post(f"{server.url}/v1/classify", files={"file": (photo.name, photo.read_bytes())})
    assert one.status_code == 200 and one.json()["label"] == "pineapple"
    files = [
        ("files", (p.name, p.read_bytes())) for p in image_files(dataset / "studio" / "test")[:8]
    ]
    sid = httpx.post(f"{server.url}/v1/batches", files=files).json()["session_id"]
    deadline = time.monotonic() + 60
    progress: dict[str, object] = {}
    while time.monotonic() < deadline:
        progress = httpx.get(f"{server.url}/v1/batches/{sid}").json()
        if progress["complete"]:
            break
        time.sleep(0.3)
    assert progress["done"] == 8 and progress["errors"] == 0
    assert len(httpx.get(f"{server.url}/v1/batches/{sid}/results").json()) == 8


def test_with_a_token_it_binds_where_asked_and_requires_it(tmp_path: Path) -> None:
    token = "serve-token-42"
    s = Server(
        {"FRUITSTREAM_DATA_DIR": str(tmp_path / "data"), "FRUITSTREAM_API_TOKENS": token},
        host="127.0.0.1",
    )
    try:
        assert httpx.get(f"{s.url}/v1/batches").status_code == 401
        auth = {"authorization": f"Bearer {token}"}
        assert httpx.get(f"{s.url}/v1/batches", headers=auth).status_code == 200
        config = subprocess.run(
            [sys.executable, "-m", "fruitstream", "config"],
            env={**os.environ, "FRUITSTREAM_API_TOKENS": token},
            capture_output=True,
            text=True,
        ).stdout
        assert "FRUITSTREAM_API_TOKENS=**********" in config and token not in config
    finally:
        out, err = s.stop()
    assert token not in out + err


def test_the_live_server_answers_as_its_document_says(tmp_path: Path, dataset: Path) -> None:
    """The contract test: the document fetched from the running server drives requests to it;
    every answer is checked against it (status, media type, headers, body schema), and a
    missing or wrong token must be refused. Then a 100 MB upload without a token is refused
    with 401 by the real server (tests/unit/test_api_guard.py checks that none of it is read)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import positive_data_acceptance

    token = "contract-token-0123456789"
    s = Server(
        {"FRUITSTREAM_DATA_DIR": str(tmp_path / "data"), "FRUITSTREAM_API_TOKENS": token},
        host="127.0.0.1",
    )
    try:
        schema = schemathesis.openapi.from_url(f"{s.url}/openapi.json")
        failures = []
        for operation in schema.get_all_operations():
            op = operation.ok()

            @settings(
                max_examples=8,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
            )
            @given(case=op.as_strategy())
            def run(case: Any) -> None:
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
                photo = case.method == "POST" and case.operation.path in (
                    "/v1/classify",
                    "/v1/labels",
                )
                photo = photo or "callback" in (case.query or {})  # the operator's host list
                # A reused Idempotency-Key with another body is a 422: a rule of what came before.
                photo = photo or "idempotency-key" in {k.lower() for k in (case.headers or {})}
                case.call_and_validate(
                    base_url=s.url, excluded_checks=[positive_data_acceptance] if photo else []
                )

            try:
                run()
            except Exception as exc:
                failures.append(f"{op.method.upper()} {op.path}: {exc}")
        assert failures == []
        photo = image_files(dataset / "grocery" / "val" / "kiwi")[0].read_bytes()
        one = httpx.post(
            f"{s.url}/v1/classify",
            content=photo,
            headers={"authorization": f"Bearer {token}", "content-type": "image/jpeg"},
        )
        assert one.status_code == 200 and one.json()["label"] == "kiwi"

        def endless() -> Iterator[bytes]:
            for _ in range(100):  # 100 MB, sent only as fast as the server reads it
                yield b"\0" * (1024 * 1024)

        head = {"content-type": "multipart/form-data; boundary=x"}
        refused = httpx.post(f"{s.url}/v1/batches", content=endless(), headers=head, timeout=30)
        assert refused.status_code == 401
    finally:
        s.stop()


def test_the_python_client_against_the_live_server(tmp_path: Path, dataset: Path) -> None:
    """The README's client example, against ``fruitstream serve`` with a token."""
    from fruitstream.client import ApiError, Client, ServerUnavailableError

    token = "client-token-0123456789"
    s = Server(
        {"FRUITSTREAM_DATA_DIR": str(tmp_path / "data"), "FRUITSTREAM_API_TOKENS": token},
        host="127.0.0.1",
    )
    try:
        photos = image_files(dataset / "grocery" / "val" / "banana")[:3]
        with Client(s.url, token=token) as api:
            assert api.ready()
            one = api.classify(photos[0], top_k=2)
            assert one.label == "banana" and len(one.top_k) == 2
            batch = api.submit([*photos, ("empty.jpg", b"")], name="client")
            assert [p.state for p in batch.photos] == ["queued"] * 3 + ["rejected"]
            rows = api.results(batch.session_id, wait=60)
            by_id = {r.image_id: r for r in rows}
            assert [by_id[p.image_id].status for p in batch.photos] == [
                "ok", "ok", "ok", "error"
            ]  # fmt: skip
            assert api.batches()[0].session_id == batch.session_id
            assert len(api.results_csv(batch.session_id).decode().splitlines()) == 5
            with pytest.raises(ApiError) as missing:
                api.progress("no-such-batch")
            assert missing.value.status == 404
            assert missing.value.type == "urn:fruitstream:problem:not-found"
            assert missing.value.request_id
        with Client(s.url, token="wrong") as intruder, pytest.raises(ApiError) as refused:
            intruder.batches()
        assert refused.value.status == 401
    finally:
        s.stop()
    with Client(s.url, token=token) as late, pytest.raises(ServerUnavailableError):
        late.batches()  # the server is gone: the client's own error, not httpx's


def test_concurrent_clients_get_every_answer(tmp_path: Path, dataset: Path) -> None:
    """The load benchmark's run, small: 4 clients at once, every request answered (its
    latency figures are the benchmark's to print, not a test's to time)."""
    from fruitstream.bench.load import load_benchmark

    photos = image_files(dataset / "grocery" / "val" / "kiwi")[:4]
    report = load_benchmark(photos, requests=24, workdir=tmp_path, clients=4, sequential=4)
    assert report["errors"] == 0 and report["first_errors"] == []
    assert report["requests"] == 24 and report["images_per_s"] > 0
