"""Batch-complete callbacks: refused for hosts the operator did not allow, sent once when the
batch is complete, signed, retried with backoff, given up at last; the real POST follows no
redirect."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fruitstream.adapters.webhook import post_json
from fruitstream.domain import Caller, SessionRecord
from fruitstream.entrypoints.api import create_app
from fruitstream.errors import CallbackError, ConfigError
from fruitstream.service.callbacks import (
    MAX_ATTEMPTS,
    PER_TENANT,
    CallbackSender,
    CallbackSettings,
    allowed_callbacks,
    check_callback,
    signature,
)
from tests.fakes import FakeWorld, MemoryResultsDatabase, fake_world

SECRET = "callback-secret-0123456789"
HOOKS = "https://hooks.example"


class Receiver:
    """A fake receiving end: answers with the statuses given, in turn, and records calls."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[str, bytes, dict[str, str]]] = []

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        self.calls.append((url, body, dict(headers)))
        return self.statuses[min(len(self.calls), len(self.statuses)) - 1]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    w = fake_world(tmp_path, api_callback_hosts=HOOKS, api_callback_secret=SECRET)
    yield w
    w.service.stop(timeout=5)


def test_only_allowed_hosts_and_only_when_configured() -> None:
    hosts = allowed_callbacks(HOOKS)
    assert check_callback("https://hooks.example/done", hosts, SECRET)
    for url in ("https://evil.example/x", "ftp://hooks.example/x", "hooks.example", ""):
        with pytest.raises(CallbackError):
            check_callback(url, hosts, SECRET)
    with pytest.raises(CallbackError, match="off"):
        check_callback("https://hooks.example/done", [], SECRET)


def test_a_batch_calls_back_once_signed_when_complete(world: FakeWorld) -> None:
    receiver = Receiver([200])
    world.service.backends.post = receiver
    with TestClient(create_app(world.service, tokens=[])) as client:
        refused = client.post(
            "/v1/batches?callback=https://evil.example/x",
            files=[("files", ("a.jpg", b"fruit:apple", ""))],
        )
        assert refused.status_code == 422 and refused.json()["type"].endswith(":callback-refused")
        assert world.db.session_records == {}  # refused before anything was stored
        files = [("files", ("a.jpg", b"fruit:apple", "")), ("files", ("b.jpg", b"fruit:?", ""))]
        sid = client.post("/v1/batches?callback=https://hooks.example/done", files=files).json()[
            "session_id"
        ]
        deadline = time.monotonic() + 20
        while not receiver.calls:
            assert time.monotonic() < deadline, "no callback came"
            time.sleep(0.05)
        time.sleep(1.5)  # another round of the sender: still one call
    assert len(receiver.calls) == 1
    url, body, headers = receiver.calls[0]
    document = json.loads(body)
    assert url == "https://hooks.example/done"
    assert document == {
        "event": "batch.complete",
        "session_id": sid,
        "submitted": 2,
        "done": 2,
        "errors": 0,
        "results": f"/v1/batches/{sid}/results",
    }
    stamp = headers["X-Fruitstream-Timestamp"].encode()
    expected = hmac.new(SECRET.encode(), stamp + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Fruitstream-Signature"] == f"sha256={expected}"


def test_a_failing_receiver_is_retried_with_backoff_then_given_up(world: FakeWorld) -> None:
    sid = world.service.submit([], queue_only=True).session_id  # an empty batch: complete
    world.db.add_callback(sid, "https://hooks.example/x")
    receiver = Receiver([503, 200])
    sender = CallbackSender(world.db, receiver, SECRET, allowed_callbacks(HOOKS))
    assert sender.run_once() == 0
    _url, attempts, next_at, done = world.db.callbacks[sid]
    assert attempts == 1 and not done and next_at > datetime.now(UTC)  # type: ignore[operator]
    assert sender.run_once() == 0 and len(receiver.calls) == 1  # not due yet
    world.db.callbacks[sid][2] = datetime.now(UTC)
    assert sender.run_once() == 1 and world.db.callbacks[sid][3] is True
    never = Receiver([0])
    other = world.service.submit([], queue_only=True).session_id
    world.db.add_callback(other, "https://hooks.example/y")
    for _ in range(MAX_ATTEMPTS):
        world.db.callbacks[other][2] = datetime.now(UTC)
        CallbackSender(world.db, never, SECRET, allowed_callbacks(HOOKS)).run_once()
    assert len(never.calls) == MAX_ATTEMPTS and world.db.callbacks[other][3] is True


def test_the_signature_covers_the_timestamp_and_the_body() -> None:
    one = signature(SECRET, "1700000000", b"{}")
    assert one != signature(SECRET, "1700000001", b"{}")
    assert one != signature(SECRET, "1700000000", b"{ }")
    assert one != signature("other", "1700000000", b"{}")


def test_the_real_post_reports_statuses_and_follows_no_redirect() -> None:
    got: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/moved":
                self.send_response(307)
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            else:
                self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert post_json(f"{base}/ok", b'{"a": 1}', {"X-Test": "1"}) == 204
        assert got == [b'{"a": 1}']
        assert post_json(f"{base}/moved", b"{}", {}) == 307  # reported, not followed
        assert len(got) == 2
        assert post_json("http://127.0.0.1:9/closed", b"{}", {}, timeout=2) == 0
    finally:
        server.shutdown()


def test_allowed_places_are_origins_with_an_optional_path() -> None:
    allowed = allowed_callbacks("https://hooks.example, http://127.0.0.1:8080/hooks/")
    for url in (
        "https://hooks.example/done",
        "https://HOOKS.example:443/any/path?x=1",
        "https://hooks.example",
        "http://127.0.0.1:8080/hooks",
        "http://127.0.0.1:8080/hooks/done?batch=1",
    ):
        assert check_callback(url, allowed, SECRET) == url
    for url in (
        "http://127.0.0.1:9102/admin/delete-everything?confirm=yes",  # another service's port
        "http://127.0.0.1/hooks/done",  # the default port is not 8080
        "http://127.0.0.1:8080/admin",  # a path that was not listed
        "http://127.0.0.1:8080/hooks-old",
        "http://127.0.0.1:8080/",
        "http://127.0.0.1:8080/hooks/../admin",
        "http://127.0.0.1:8080/hooks/%2e%2E/admin",
        "http://hooks.example/done",  # http is not https
        "https://hooks.example:8443/done",
        "https://user:pw@hooks.example/x",  # user info
        "https://user@hooks.example/x",
        "https://hooks.example@evil.example/x",
        "https://hooks.example\\@evil.example/x",
        "https://hooks.example /x",
        "https://hooks.example:99999/x",
        "https://hooks.example.evil.example/x",
        "https://evil.example/x",
        "ftp://hooks.example/x",
        "hooks.example",
        "",
    ):
        with pytest.raises(CallbackError):
            check_callback(url, allowed, SECRET)


def test_an_entry_that_is_not_an_origin_refuses_the_settings(tmp_path: Path) -> None:
    for bad in (
        "hooks.example",  # the old format: a bare host name
        "hooks.example:8443",
        "https://hooks.example, 127.0.0.1",
        "ftp://hooks.example",
        "https://user:pw@hooks.example",
        "https://hooks.example/x?y=1",
        "https://*.example",
        "https://hooks.example:http",
    ):
        with pytest.raises(ConfigError, match=r"FRUITSTREAM_API_CALLBACK_HOSTS.*scheme://host"):
            CallbackSettings.load(hosts=bad)
    settings = CallbackSettings.load(hosts="https://Hooks.Example:443/, http://[::1]:8080/h/")
    assert [str(entry) for entry in settings.allowed] == [
        "https://hooks.example",
        "http://[::1]:8080/h",
    ]
    old = fake_world(tmp_path, api_callback_hosts="hooks.example", api_callback_secret=SECRET)
    with pytest.raises(ConfigError, match=r"hooks\.example"):  # the server does not start
        old.service.ensure_callbacks()


def until(done: Callable[[], bool], why: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, why
        time.sleep(0.01)


def test_a_slow_receiver_of_one_tenant_does_not_delay_another(world: FakeWorld) -> None:
    release, fast_done = threading.Event(), threading.Event()
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        with lock:
            calls[url] += 1
        if "/slow/" in url:
            release.wait(10)  # tenant a's receiver hangs
        else:
            fast_done.set()
        return 200

    def batch(owner: str, url: str) -> str:
        sid = world.service.submit([], queue_only=True, caller=Caller(owner)).session_id
        world.db.add_callback(sid, url)
        return sid

    slow = [batch("tenant-a", f"{HOOKS}/slow/{i}") for i in range(PER_TENANT + 1)]
    fast = batch("tenant-b", f"{HOOKS}/fast")  # due last
    allowed, _secret = world.service.workers.callback_config()
    sender = CallbackSender(world.db, post, SECRET, allowed, poll=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert fast_done.wait(5), "tenant b's callback waited for tenant a's receiver"
        time.sleep(0.3)  # rounds go by while tenant a's receiver hangs
        with lock:
            hanging = {url: n for url, n in calls.items() if "/slow/" in url}
        assert sum(hanging.values()) == PER_TENANT  # tenant a holds its own slots, no more
        assert set(hanging.values()) == {1}  # a delivery in flight is not taken again
        until(lambda: world.db.callbacks[fast][3] is True, "tenant b's callback not settled")
        assert not any(world.db.callbacks[sid][3] for sid in slow)
        release.set()
        until(lambda: all(world.db.callbacks[sid][3] for sid in slow), "tenant a's did not follow")
    finally:
        release.set()
        stop.set()
        thread.join(5)
    assert calls == Counter({f"{HOOKS}/slow/{i}": 1 for i in range(PER_TENANT + 1)}) + Counter(
        {f"{HOOKS}/fast": 1}
    )


def test_a_post_that_raises_is_a_failed_attempt(world: FakeWorld) -> None:
    sid = world.service.submit([], queue_only=True).session_id
    world.db.add_callback(sid, f"{HOOKS}/x")

    def broken(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        raise RuntimeError("boom")

    sender = CallbackSender(world.db, broken, SECRET, allowed_callbacks(HOOKS))
    assert sender.run_once() == 0 and sender.in_flight() == 0
    _url, attempts, next_at, done = world.db.callbacks[sid]
    assert attempts == 1 and not done and next_at > datetime.now(UTC)  # type: ignore[operator]


def test_a_delivery_that_settles_while_a_round_reads_the_list_is_not_sent_twice() -> None:
    answer = threading.Event()
    reads: list[int] = []

    class Racing(MemoryResultsDatabase):
        """The second read of the due list is returned only after the delivery in flight
        has answered and settled: it still names that callback."""

        def due_callbacks(self, now: datetime) -> list[tuple[str, str, int]]:
            due = super().due_callbacks(now)
            reads.append(len(due))
            if len(reads) == 2:
                answer.set()
                until(lambda: sender.in_flight() == 0, "the first delivery did not settle")
            return due

    db = Racing()
    db.add_session(SessionRecord("s1", datetime.now(UTC), 0, owner="tenant-a"))
    db.add_callback("s1", f"{HOOKS}/x")
    calls: list[str] = []

    def post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        calls.append(url)
        assert answer.wait(5)
        return 200

    sender = CallbackSender(db, post, SECRET, allowed_callbacks(HOOKS))
    first = sender.dispatch()  # takes s1; its POST answers during the next round's read
    assert len(first) == 1
    sender.run_once()  # that round's list names s1, delivered and settled meanwhile
    first[0].join(5)
    assert reads == [1, 1] and calls == [f"{HOOKS}/x"] and db.callbacks["s1"][3] is True
