"""The HTTP API over the fakes (no model, no server): what a batch's 202 says of each file."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fruitstream.entrypoints.api import create_app
from tests.fakes import fake_world


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    world = fake_world(tmp_path)
    with TestClient(create_app(world.service, tokens=[])) as c:
        yield c
    world.service.stop(timeout=5)


def test_the_202_lists_every_part_in_order_with_its_image_id(client: TestClient) -> None:
    parts = [("big.jpg", b"fruit:apple"), ("big.jpg", b""), ("banana.jpg", b"fruit:banana")]
    files = [("files", (name, data, "image/jpeg")) for name, data in parts]
    r = client.post("/v1/batches", files=files)
    assert r.status_code == 202, r.text
    batch = r.json()
    assert batch["submitted"] == 3 and batch["queued"] == 2
    assert [p["filename"] for p in batch["photos"]] == ["big.jpg", "big.jpg", "banana.jpg"]
    assert [p["state"] for p in batch["photos"]] == ["queued", "rejected", "queued"]
    assert batch["photos"][1]["reason"] and batch["photos"][0]["reason"] is None
    sid = batch["session_id"]
    deadline = time.monotonic() + 30
    while not client.get(f"/v1/batches/{sid}").json()["complete"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.get(f"/v1/batches/{sid}").json()["submitted"] == 3
    rows = {row["image_id"]: row for row in client.get(f"/v1/batches/{sid}/results").json()}
    assert [rows[p["image_id"]]["label"] for p in batch["photos"]] == ["apple", None, "banana"]


def _wait(client: TestClient, sid: str) -> None:
    deadline = time.monotonic() + 30
    while not client.get(f"/v1/batches/{sid}").json()["complete"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_results_say_when_photos_are_pending(tmp_path: Path) -> None:
    world = fake_world(tmp_path, start_workers=False)  # nothing classifies: the batch waits
    with TestClient(create_app(world.service, tokens=[])) as client:
        files = [("files", ("a.jpg", b"fruit:apple", "image/jpeg"))] * 2
        sid = client.post("/v1/batches", files=files).json()["session_id"]
        early = client.get(f"/v1/batches/{sid}/results")
        assert early.status_code == 202 and early.json() == []
        assert early.headers["x-results-complete"] == "false"
        assert early.headers["x-results-pending"] == "2"
        world.service.ensure_worker()
        _wait(client, sid)
        done = client.get(f"/v1/batches/{sid}/results")
        assert done.status_code == 200 and len(done.json()) == 2
        assert done.headers["x-results-pending"] == "0"
    world.service.stop(timeout=5)


def test_results_are_negotiated_and_the_csv_is_a_download(client: TestClient) -> None:
    files = [("files", ("a.jpg", b"fruit:apple", "image/jpeg")), ("files", ("b.jpg", b"x", ""))]
    sid = client.post("/v1/batches", files=files).json()["session_id"]
    _wait(client, sid)
    url = f"/v1/batches/{sid}/results"
    as_json = client.get(url, headers={"accept": "text/csv;q=0.5, application/json"})
    assert as_json.headers["content-type"] == "application/json"
    table = client.get(url, headers={"accept": "application/json;q=0.2, text/*"})
    assert table.headers["content-type"].startswith("text/csv")
    assert table.headers["content-disposition"] == f'attachment; filename="fruitstream-{sid}.csv"'
    header, *lines = table.text.splitlines()
    known = header.split(",").index("known")
    assert sorted(line.split(",")[known] for line in lines) == ["", "true"]
    refused = client.get(url, headers={"accept": "application/xml"})
    assert refused.status_code == 406
    assert refused.json()["type"] == "urn:fruitstream:problem:not-acceptable"
    assert client.get(url, headers={"accept": "*/*"}).headers["content-type"] == (
        "application/json"
    )


def test_each_problem_has_a_stable_type(tmp_path: Path) -> None:
    world = fake_world(tmp_path, max_image_bytes=1000, api_max_batch_files=2)
    with TestClient(create_app(world.service, tokens=[])) as client:

        def kind(r: object) -> str:
            body = r.json()  # type: ignore[attr-defined]
            assert r.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
            return str(body["type"]).removeprefix("urn:fruitstream:problem:")

        assert kind(client.post("/v1/classify", content=b"garbage")) == "not-an-image"
        assert kind(client.post("/v1/classify", content=b"x" * 2000)) == "too-large"
        assert kind(client.get("/v1/batches/nope")) == "not-found"
        text = client.post("/v1/classify", content=b"hi", headers={"content-type": "text/plain"})
        assert text.status_code == 415 and kind(text) == "unsupported-media-type"
        many = [("files", (f"{i}.jpg", b"fruit:apple", "image/jpeg")) for i in range(3)]
        over = client.post("/v1/batches", files=many)
        assert over.status_code == 413 and kind(over) == "too-many-files"
        empty = client.post("/v1/batches", data={"name": "x"}, files=[("other", ("a", b"1"))])
        assert empty.status_code == 422 and kind(empty) == "invalid-request"
        wrong = client.put("/v1/batches")
        assert wrong.status_code == 405 and kind(wrong) == "method-not-allowed"
        assert set(wrong.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    world.service.stop(timeout=5)


def test_head_and_options_answer_on_every_path(tmp_path: Path) -> None:
    world = fake_world(tmp_path)
    with TestClient(create_app(world.service, tokens=["t0ken-0123456789"])) as client:
        options = client.options("/v1/batches")  # no token: it says only what is allowed
        assert options.status_code == 204
        assert options.headers["allow"] == "GET, HEAD, OPTIONS, POST"
        head = client.head("/v1/batches", headers={"authorization": "Bearer t0ken-0123456789"})
        assert head.status_code == 200 and head.content == b""
        assert client.head("/v1/batches").status_code == 401
    world.service.stop(timeout=5)


def test_readiness_details_only_with_a_token(tmp_path: Path) -> None:
    world = fake_world(tmp_path)
    with TestClient(create_app(world.service, tokens=["t0ken-0123456789"])) as client:
        anonymous = client.get("/readyz").json()
        assert {c["detail"] for c in anonymous["checks"]} <= {"ok", "down"}
        assert all(c["figures"] == [] for c in anonymous["checks"])
        trusted = client.get("/readyz", headers={"authorization": "Bearer t0ken-0123456789"})
        details = {c["name"]: c["detail"] for c in trusted.json()["checks"]}
        assert details["results database"].startswith("memory")
    world.service.stop(timeout=5)


def test_each_request_has_an_id_returned_logged_and_in_its_problem(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="fruitstream.api.access")
    given = client.get("/v1/batches/nope", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    assert given.json()["request_id"] == "abc-123"
    made = client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
    assert made.headers["x-request-id"] != "bad id\twith spaces"
    assert len(made.headers["x-request-id"]) == 32
    lines = [r for r in caplog.records if r.name == "fruitstream.api.access"]
    first = next(r for r in lines if getattr(r, "request_id", "") == "abc-123")
    assert (first.method, first.path, first.status) == ("GET", "/v1/batches/nope", 404)  # type: ignore[attr-defined]
    assert first.bytes > 0 and first.ms >= 0  # type: ignore[attr-defined]


def test_log_lines_as_json_and_as_text() -> None:
    import json
    import logging

    from fruitstream.entrypoints.api.access import JsonFormatter, TextFormatter

    record = logging.LogRecord(
        "fruitstream.api.access", logging.INFO, "", 0, "GET / %d", (200,), None
    )
    record.request_id, record.status, record.ms = "r1", 200, 1.5
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "GET / 200" and data["request_id"] == "r1" and data["ms"] == 1.5
    assert data["level"] == "info" and data["time"]
    text = TextFormatter().format(record)
    assert text.endswith("GET / 200 request_id=r1 status=200 ms=1.5")


def test_metrics_count_requests_photos_workers_and_the_process(tmp_path: Path) -> None:
    world = fake_world(tmp_path)
    with TestClient(create_app(world.service, tokens=[])) as client:
        client.post("/v1/classify", content=b"fruit:apple")
        client.post("/v1/classify", content=b"fruit:?")
        client.post("/v1/classify", content=b"junk")
        client.get("/v1/batches/one-id")
        client.get("/v1/batches/another-id")
        files = [("files", ("a.jpg", b"fruit:kiwi", "")), ("files", ("b.jpg", b"", ""))]
        sid = client.post("/v1/batches", files=files).json()["session_id"]
        _wait(client, sid)
        time.sleep(1.1)  # the worker's next heartbeat carries its counts
        lines = dict(
            line.rsplit(" ", 1) for line in client.get("/metrics").text.splitlines()
            if not line.startswith("#")
        )  # fmt: skip
    world.service.stop(timeout=5)
    route = 'fruitstream_http_requests_total{route="/v1/batches/{session_id}",method="GET",'
    assert lines[route + 'status="404"}'] == "2"  # one series for the route, not per id
    assert (
        lines['fruitstream_http_requests_total{route="/v1/classify",method="POST",status="200"}']
        == "2"
    )
    for outcome, n in (("known", "1"), ("unknown", "1"), ("error", "1")):
        assert lines[f'fruitstream_photos_total{{path="classify",outcome="{outcome}"}}'] == n
    assert lines['fruitstream_photos_total{path="batch",outcome="queued"}'] == "1"
    assert lines['fruitstream_photos_total{path="batch",outcome="rejected"}'] == "1"
    recorded = [k for k in lines if k.startswith("fruitstream_worker_photos_total{")]
    assert any('outcome="recorded"' in k and lines[k] == "1.0" for k in recorded)
    assert lines['fruitstream_build_info{model="fake:0.1",precision="fp32",version="0.1.0"}'] == "1"
    assert float(lines["process_resident_memory_bytes"]) > 1e6
    assert float(lines["process_cpu_seconds_total"]) > 0


def test_the_docs_page_and_its_files_come_from_this_server(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") for s in sources)  # nothing from a CDN
    assert "cdn" not in page.text.lower()
    for source in sources:
        got = client.get(source)
        assert got.status_code == 200 and len(got.content) > 100, source


def test_top_k_on_classify(client: TestClient) -> None:
    two = client.post("/v1/classify?top_k=2", content=b"fruit:banana")
    assert two.status_code == 200 and len(two.json()["top_k"]) == 2
    assert client.post("/v1/classify?top_k=0", content=b"fruit:banana").status_code == 422


def test_cors_only_for_the_configured_origins(tmp_path: Path) -> None:
    world = fake_world(tmp_path, api_cors_origins="https://shop.example, https://b.example")
    with TestClient(create_app(world.service, tokens=[])) as client:
        asked = {
            "origin": "https://shop.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization",
        }
        preflight = client.options("/v1/classify", headers=asked)
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
        other = client.options("/v1/classify", headers={**asked, "origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        simple = client.get("/healthz", headers={"origin": "https://b.example"})
        assert simple.headers["access-control-allow-origin"] == "https://b.example"
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    world.service.stop(timeout=5)
    plain = fake_world(tmp_path / "plain")
    with TestClient(create_app(plain.service, tokens=[])) as client:
        r = client.get("/healthz", headers={"origin": "https://shop.example"})
        assert "access-control-allow-origin" not in r.headers  # off by default
    plain.service.stop(timeout=5)


def test_rate_limit_per_token_with_retry_after(tmp_path: Path) -> None:
    world = fake_world(tmp_path, api_rate_limit=0.5, api_rate_burst=2)
    tokens = ["token-one-0123456789", "token-two-0123456789"]
    with TestClient(create_app(world.service, tokens=tokens)) as client:
        one = {"authorization": f"Bearer {tokens[0]}"}
        assert [client.get("/v1/batches", headers=one).status_code for _ in range(2)] == [200, 200]
        limited = client.get("/v1/batches", headers=one)
        assert limited.status_code == 429
        assert limited.json()["type"] == "urn:fruitstream:problem:rate-limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 2
        two = {"authorization": f"Bearer {tokens[1]}"}
        assert client.get("/v1/batches", headers=two).status_code == 200  # its own bucket
        assert client.get("/healthz").status_code == 200  # probes are never limited
    world.service.stop(timeout=5)


def test_the_token_bucket_refills_at_its_rate() -> None:
    from fruitstream.entrypoints.api.guard import RateLimiter

    limiter = RateLimiter()
    assert [limiter.wait_for("a", rate=10.0, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.wait_for("a", rate=10.0, burst=3)
    assert 0 < wait <= 0.1
    time.sleep(wait + 0.01)
    assert limiter.wait_for("a", rate=10.0, burst=3) == 0.0


def test_the_document_names_tags_ids_and_problem_schemas(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    operations = [
        (path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()
    ]
    ids = [op["operationId"] for _path, _method, op in operations]
    assert len(ids) == len(set(ids)) and "post_classify" in ids and "head_results" in ids
    assert all(op.get("tags") for _path, _method, op in operations)
    for path, method, op in operations:
        if path.startswith("/v1/") and method in {"get", "post"}:
            for status in ("401", "413", "429", "500", "503"):  # more per route: test_openapi
                content = op["responses"][status]["content"]["application/problem+json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Problem"}, (path, status)
    results = doc["paths"]["/v1/batches/{session_id}/results"]["get"]["responses"]
    assert set(results) >= {"200", "202", "406"}
    item = results["200"]["content"]["application/json"]["schema"]["items"]
    assert item == {"$ref": "#/components/schemas/ResultOut"}
    assert doc["components"]["schemas"]["ClassifyOut"]["examples"]


def test_each_token_sees_its_own_batches_and_an_admin_token_all(tmp_path: Path) -> None:
    world = fake_world(tmp_path)
    alice, bob, admin = "alice-token-0123456789", "bob-token-0123456789", "admin-token-01234567"
    app = create_app(world.service, tokens=[alice, bob], admin_tokens=[admin])
    with TestClient(app) as client:

        def as_(token: str) -> dict[str, str]:
            return {"authorization": f"Bearer {token}"}

        photo = [("files", ("a.jpg", b"fruit:apple", "image/jpeg"))]
        mine = client.post("/v1/batches", files=photo, headers=as_(alice)).json()["session_id"]
        theirs = client.post("/v1/batches", files=photo, headers=as_(bob)).json()["session_id"]
        assert [b["session_id"] for b in client.get("/v1/batches", headers=as_(alice)).json()] == [
            mine
        ]
        assert client.get(f"/v1/batches/{theirs}", headers=as_(alice)).status_code == 404
        assert client.get(f"/v1/batches/{theirs}/results", headers=as_(alice)).status_code == 404
        assert client.get(f"/v1/batches/{theirs}", headers=as_(bob)).status_code == 200
        everything = client.get("/v1/batches", headers=as_(admin)).json()
        assert {b["session_id"] for b in everything} == {mine, theirs}
        assert client.get(f"/v1/batches/{mine}", headers=as_(admin)).status_code == 200
        stored = world.db.get_session(mine).owner
        assert stored and alice not in stored  # an opaque id, never the token
    world.service.stop(timeout=5)


def test_the_same_idempotency_key_is_one_batch(tmp_path: Path) -> None:
    world = fake_world(tmp_path)
    alice, bob = "alice-token-0123456789", "bob-token-0123456789"
    with TestClient(create_app(world.service, tokens=[alice, bob])) as client:
        photo = [("files", ("a.jpg", b"fruit:apple", "image/jpeg"))]
        key = {"authorization": f"Bearer {alice}", "idempotency-key": "order-42"}
        first = client.post("/v1/batches", files=photo, headers=key)
        again = client.post("/v1/batches", files=photo, headers=key)
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert len(world.db.session_records) == 1
        other = {"authorization": f"Bearer {bob}", "idempotency-key": "order-42"}
        assert client.post("/v1/batches", files=photo, headers=other).json() != first.json()
        plain = {"authorization": f"Bearer {alice}"}
        client.post("/v1/batches", files=photo, headers=plain)
        assert len(world.db.session_records) == 3  # bob's key is his; no key, no memory
    world.service.stop(timeout=5)


def test_a_failed_first_attempt_frees_its_key_and_a_running_one_is_a_conflict(
    tmp_path: Path,
) -> None:
    from fruitstream.domain import OPERATOR
    from fruitstream.errors import ConflictError, StorageError
    from fruitstream.service.batches import idempotency_key

    world = fake_world(tmp_path)
    with pytest.raises(StorageError):
        world.service.once("k", lambda _sid: (_ for _ in ()).throw(StorageError("down")))
    assert world.service.once("k", lambda _sid: "answer") == ("answer", False)
    assert world.service.once("k", lambda _sid: "other") == ("answer", True)
    # the first request has claimed it
    assert world.db.claim(idempotency_key("running", OPERATOR)) is None
    with pytest.raises(ConflictError):
        world.service.once("running", lambda _sid: "x")


def test_idempotency_keys_on_sql(tmp_path: Path) -> None:
    from fruitstream.adapters.sql import SqlDatabase

    db = SqlDatabase.from_url(f"sqlite:///{tmp_path / 'k.db'}")
    assert db.claim("k1") is None
    running = db.claim("k1")
    assert running is not None and running.answer is None  # still running
    db.settle("k1", '{"session_id": "s"}')
    settled = db.claim("k1")
    assert settled is not None and settled.answer == '{"session_id": "s"}'
    assert db.claim("k2") is None
    db.release("k2")
    assert db.claim("k2") is None
