"""The API's request guard: no token, no body read; no request past its route's limit.

The app runs over the fakes (no model, no server); the ASGI calls are made by hand so that the
test sees exactly which parts of a body the server asked for.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fruitstream.domain import ImageLimits
from fruitstream.entrypoints.api import create_app
from fruitstream.entrypoints.api.guard import body_limit, token_accepted
from fruitstream.entrypoints.api.settings import ApiSettings
from tests.fakes import FakeWorld, fake_world

TOKEN = "guard-token-0123456789"


def _limits(world: FakeWorld) -> tuple[ImageLimits, ApiSettings]:
    return world.service.settings.limits, ApiSettings.of(world.service.settings)


LIMIT = 10_000  # bytes per photo in these tests


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    w = fake_world(tmp_path, max_image_bytes=LIMIT, api_max_batch_files=3)
    yield w
    w.service.stop(timeout=5)


def _call(app: Any, method: str, path: str, headers: dict[str, str], chunks: list[bytes]) -> Any:
    """One request through the ASGI app; returns (status, headers, body, chunks read)."""
    read: list[int] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if len(read) < len(chunks):
            read.append(len(chunks[len(read)]))
            return {
                "type": "http.request",
                "body": chunks[len(read) - 1],
                "more_body": len(read) < len(chunks),
            }
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    got = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], got, body, read


def _multipart_head(boundary: str = "b0undary") -> dict[str, str]:
    return {"content-type": f"multipart/form-data; boundary={boundary}"}


@contextmanager
def _app(world: FakeWorld, tokens: list[str]) -> Iterator[Any]:
    app = create_app(world.service, tokens=tokens)
    with TestClient(app):  # runs the lifespan: the state the guard reads
        yield app


def test_no_token_no_body_read(world: FakeWorld) -> None:
    chunks = [b"x" * 65536] * 1600  # 100 MB a client would send without a token
    with _app(world, [TOKEN]) as app:
        status, headers, body, read = _call(app, "POST", "/v1/batches", _multipart_head(), chunks)
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert json.loads(body)["title"] == "Unauthorized"
    assert read == []  # not one byte of the upload was asked for


def test_a_declared_length_over_the_limit_is_refused_unread(world: FakeWorld) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    over = body_limit("POST", "/v1/batches", *_limits(world)) + 1
    headers = {**auth, **_multipart_head(), "content-length": str(over)}
    classify = {**auth, "content-length": str(LIMIT + 64 * 1024 + 1)}
    with _app(world, [TOKEN]) as app:
        status, got, body, read = _call(app, "POST", "/v1/batches", headers, [b"x" * 1024])
        assert status == 413 and got["content-type"] == "application/problem+json"
        assert f"over the limit of {over - 1:,} bytes" in json.loads(body)["detail"]
        assert read == []
        status, _got, _body, read = _call(app, "POST", "/v1/classify", classify, [b"x"])
        assert status == 413 and read == []


def test_a_chunked_body_is_cut_off_at_the_limit(world: FakeWorld) -> None:
    limit = body_limit("POST", "/v1/batches", *_limits(world))
    part = b'--b0undary\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'
    chunks = [part] + [b"x" * 8192] * 200  # 1.6 MB in one part, no length declared
    with _app(world, []) as app:
        status, _got, body, read = _call(app, "POST", "/v1/batches", _multipart_head(), chunks)
    assert status == 413
    assert f"passed the limit of {limit:,} bytes" in json.loads(body)["detail"]
    assert limit < sum(read) <= limit + 8192  # it stopped at the chunk that passed the limit
    assert world.db.session_records == {}  # nothing was submitted


def test_the_probes_and_the_description_stay_open(world: FakeWorld) -> None:
    with TestClient(create_app(world.service, tokens=[TOKEN])) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.get("/v1/batches").status_code == 401
        good = {"authorization": f"Bearer {TOKEN}"}
        assert client.get("/metrics", headers=good).status_code == 200


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"Bearer {TOKEN[:-1]}", False),  # a prefix
        (f"Bearer {TOKEN}x", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        ("Bearer ", False),
        ("", False),
        (None, False),
    ],
)
def test_token_accepted(header: str | None, accepted: bool) -> None:
    assert token_accepted(header, [TOKEN, "another-token"]) is accepted
    assert token_accepted(header, []) is True  # no tokens configured: no authentication


def test_the_batch_limit_is_files_times_photo_bounded_by_the_setting(world: FakeWorld) -> None:
    limits, api = world.service.settings.limits, ApiSettings.of(world.service.settings)
    per_file = LIMIT + 64 * 1024
    assert body_limit("POST", "/v1/batches", limits, api) == 3 * per_file
    small = api.model_copy(update={"max_request_bytes": 50_000})
    assert body_limit("POST", "/v1/batches", limits, small) == 50_000
    assert body_limit("GET", "/v1/batches", limits, api) == 64 * 1024
