"""Smaller edges of the HTTP API: what a browser may send and read (CORS), the media types a
body is taken in, and a JSON log with no line that is not JSON."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fruitstream.entrypoints.api import create_app
from fruitstream.entrypoints.api.access import logging_config
from tests.fakes import FakeWorld, fake_world

ORIGIN = "https://shop.example"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    world = fake_world(tmp_path, api_cors_origins=ORIGIN)
    yield world
    world.service.stop(timeout=5)


@pytest.fixture
def client(world: FakeWorld) -> Iterator[TestClient]:
    with TestClient(create_app(world.service, tokens=[])) as c:
        yield c


def test_a_browser_may_delete_send_an_idempotency_key_and_read_the_paging_headers(
    client: TestClient,
) -> None:
    asked = {
        "origin": ORIGIN,
        "access-control-request-method": "DELETE",
        "access-control-request-headers": "authorization, idempotency-key",
    }
    preflight = client.options("/v1/labels/some-id", headers=asked)
    assert preflight.status_code == 200, preflight.text
    assert "DELETE" in preflight.headers["access-control-allow-methods"]
    assert "idempotency-key" in preflight.headers["access-control-allow-headers"].lower()
    post = {**asked, "access-control-request-method": "POST"}
    assert client.options("/v1/batches", headers=post).status_code == 200
    answer = client.get("/v1/batches", headers={"origin": ORIGIN})
    exposed = answer.headers["access-control-expose-headers"].lower()
    for header in ("x-next-cursor", "link", "idempotent-replayed", "retry-after"):
        assert header in exposed, header


def test_a_label_is_json_only_when_its_media_type_is(client: TestClient) -> None:
    body = json.dumps({"image_id": "no-such-photo", "label": "apple"})
    for kind in ("application/jsonx", "application/json-seq", "text/json"):
        r = client.post("/v1/labels", content=body, headers={"content-type": kind})
        assert r.status_code == 415, (kind, r.text)
    for kind in ("application/json", "Application/JSON; charset=utf-8", "application/ld+json"):
        r = client.post("/v1/labels", content=body, headers={"content-type": kind})
        assert r.status_code == 404, (kind, r.text)  # read as JSON: the photo is not known
    raw = client.post("/v1/classify", content=b"fruit:apple", headers={"content-type": "x/y"})
    assert raw.status_code == 415
    odd = {"content-type": "application/octet-streamx"}
    assert client.post("/v1/classify", content=b"fruit:apple", headers=odd).status_code == 415
    spaced = {"content-type": "image/jpeg; q=1"}
    assert client.post("/v1/classify", content=b"fruit:apple", headers=spaced).status_code == 200


def test_a_label_may_bring_a_photo_of_ordinary_size(client: TestClient) -> None:
    photo = b"fruit:apple" + b" " * 300_000  # over the 64 KiB of a body without a photo
    made = client.post("/v1/labels", files={"file": ("p.jpg", photo)}, data={"label": "apple"})
    assert made.status_code == 201, made.text


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """The logging configuration of the test process, as it was (dictConfig replaces it)."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "fruitstream", "a.library"]
    loggers = [logging.getLogger(name) for name in names]
    saved = [(x.handlers[:], x.level, x.propagate, x.disabled) for x in loggers]
    yield
    for logger, (handlers, level, propagate, disabled) in zip(loggers, saved, strict=True):
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled


@pytest.mark.usefixtures("logging_restored")
def test_every_line_of_the_json_log_is_json(world: FakeWorld) -> None:
    """A served API (uvicorn in a thread, on 127.0.0.1) sent a request its HTTP parser
    refuses: uvicorn's line, the access log's, and a library's warning are each one JSON
    object on a line."""
    import uvicorn

    stream = io.StringIO()

    def config() -> dict[str, object]:
        made = logging_config(json_lines=True)
        made["handlers"]["default"]["stream"] = stream  # type: ignore[index]
        return made

    logging.config.dictConfig(config())
    app = create_app(world.service, tokens=[])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=config(), access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        for request in (b"NOT HTTP \x00\x01\r\n\r\n", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(request)
                assert s.recv(100).startswith(b"HTTP/1.1 ")
        logging.getLogger("a.library").warning("a library's warning")
        time.sleep(0.2)  # the access line is written once the answer is sent
    finally:
        server.should_exit = True
        thread.join(10)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]  # each one JSON
    said = {(x["logger"], x["message"]) for x in lines}
    assert ("uvicorn.error", "Invalid HTTP request received.") in said
    assert ("fruitstream.api.access", "GET /healthz 200") in said
    assert ("a.library", "a library's warning") in said
