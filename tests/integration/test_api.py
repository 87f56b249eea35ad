"""The HTTP API in process (FastAPI's test client) on the embedded backends and the real
model; the OpenAPI document drives property-based tests (schemathesis)."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fruitstream.bootstrap import build_service
from fruitstream.config import load_settings
from fruitstream.dataset import image_files
from fruitstream.entrypoints.api import create_app
from fruitstream.service import FruitService
from tests.conftest import bad_images, crafted_exif_jpeg, jpeg_bytes

TOKEN = "test-token-0123456789"


def _service(tmp_path: Path, **settings: object) -> FruitService:
    return build_service(load_settings(data_dir=tmp_path / "data", **settings))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_service(tmp_path), tokens=[])) as c:
        yield c


def _photo(dataset: Path, fruit: str) -> tuple[str, bytes]:
    path = image_files(dataset / "grocery" / "val" / fruit)[0]
    return path.name, path.read_bytes()


def test_classify_multipart_and_raw_body_match_the_cli_record(
    client: TestClient, dataset: Path, classifier: object
) -> None:
    name, data = _photo(dataset, "banana")
    multipart = client.post("/v1/classify", files={"file": (name, data, "image/jpeg")})
    assert multipart.status_code == 200, multipart.text
    body = multipart.json()
    assert set(body) == {"path", "label", "guess", "confidence", "known", "top_k", "error"}
    assert body["path"] == name and body["label"] == "banana" and body["error"] is None
    raw = client.post(
        "/v1/classify?name=b.jpg", content=data, headers={"content-type": "image/jpeg"}
    )
    assert raw.status_code == 200
    assert raw.json()["confidence"] == pytest.approx(body["confidence"])
    assert raw.json()["path"] == "b.jpg"
    assert client.post("/v1/classify", content=crafted_exif_jpeg()).status_code == 200


@pytest.mark.model
def test_bad_input_is_a_problem_document_never_a_traceback(tmp_path: Path) -> None:
    service = _service(tmp_path, max_image_bytes=50_000)
    with TestClient(create_app(service, tokens=[])) as client:
        for name, data in bad_images().items():
            r = client.post("/v1/classify", files={"file": (name, data, "image/jpeg")})
            assert r.status_code in {413, 422}, (name, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            problem = r.json()
            assert set(problem) == {"type", "title", "status", "detail", "request_id"}
            assert problem["request_id"] == r.headers["x-request-id"]
            assert problem["detail"] and "Traceback" not in r.text
        big = client.post("/v1/classify", content=b"x" * 60_000)
        assert big.status_code == 413 and "over the limit of 50,000 bytes" in big.json()["detail"]
        missing = client.get("/v1/batches/nope")
        assert missing.status_code == 404 and "no session" in missing.json()["detail"]
        wrong = client.post("/v1/batches")
        assert wrong.status_code == 422 and wrong.json()["title"] == "Invalid request"


def test_a_batch_through_the_api_to_csv(client: TestClient, dataset: Path) -> None:
    files = [("files", (n, d, "image/jpeg")) for n, d in (_photo(dataset, "kiwi"),)]
    files += [("files", ("noise.jpg", b"\xff\xd8 not really", "image/jpeg"))]
    files += [("files", ("=cmd().jpg", jpeg_bytes(), "image/jpeg"))]
    r = client.post("/v1/batches?name=api", files=files)
    assert r.status_code == 202, r.text
    batch = r.json()
    assert batch["submitted"] == 3 and batch["queued"] == 3 and batch["rejected"] == {}
    sid = batch["session_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not client.get(f"/v1/batches/{sid}").json()["complete"]:
        time.sleep(0.2)
    progress = client.get(f"/v1/batches/{sid}").json()
    assert (progress["done"], progress["errors"], progress["complete"]) == (3, 1, True)
    rows = client.get(f"/v1/batches/{sid}/results").json()
    assert {r["filename"] for r in rows} == {_photo(dataset, "kiwi")[0], "noise.jpg", "=cmd().jpg"}
    table = client.get(f"/v1/batches/{sid}/results", headers={"accept": "text/csv"})
    assert table.headers["content-type"].startswith("text/csv")
    names = [row["filename"] for row in csv.DictReader(io.StringIO(table.text))]
    assert "'=cmd().jpg" in names  # a spreadsheet shows it, never runs it
    history = client.get("/v1/batches").json()
    assert history[0]["session_id"] == sid and history[0]["name"] == "api"


def test_health_readiness_and_metrics(client: TestClient, dataset: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert {c["name"] for c in ready.json()["checks"]} >= {"storage", "queue", "results database"}
    client.post("/v1/classify", content=_photo(dataset, "lemon")[1])
    client.post("/v1/classify", content=b"not an image")
    text = client.get("/metrics").text
    classified = [
        line
        for line in text.splitlines()
        if line.startswith('fruitstream_photos_total{path="classify",outcome="')
    ]
    assert sorted(line.rsplit(" ", 1)[1] for line in classified) == ["1", "1"]
    assert 'fruitstream_photos_total{path="classify",outcome="error"} 1' in text
    assert 'fruitstream_classify_seconds_bucket{le="+Inf"} 2' in text
    assert "fruitstream_queue_lag_messages 0.0" in text


@pytest.mark.model
def test_bearer_tokens(tmp_path: Path) -> None:
    with TestClient(create_app(_service(tmp_path), tokens=[TOKEN])) as client:
        refused = client.get("/v1/batches")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert (
            client.get("/v1/batches", headers={"authorization": "Bearer wrong"}).status_code == 401
        )
        ok = client.get("/v1/batches", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert client.get("/healthz").status_code == 200  # for load balancers


@pytest.mark.model
def test_the_batch_file_limit(tmp_path: Path) -> None:
    service = _service(tmp_path, api_max_batch_files=2)
    with TestClient(create_app(service, tokens=[])) as client:
        files = [("files", (f"{i}.jpg", jpeg_bytes(), "image/jpeg")) for i in range(3)]
        r = client.post("/v1/batches", files=files)
        assert r.status_code == 413 and "over the limit of 2 per batch" in r.json()["detail"]


@pytest.mark.model
def test_openapi_property_based_every_check(tmp_path: Path) -> None:
    """Every operation of the document, generated from it, answers as it says: status, media
    type, headers and body schema, valid input accepted, invalid refused, no 5xx, and a
    request without (or with a wrong) token refused."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import positive_data_acceptance

    app = create_app(_service(tmp_path), tokens=[TOKEN])
    with TestClient(app):  # runs the lifespan: the service and its worker
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        failures = []
        for operation in schema.get_all_operations():
            op = operation.ok()

            @settings(
                max_examples=25,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
            )
            @given(case=op.as_strategy())
            def run(case: Any) -> None:
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
                # Any bytes fit "binary": that they decode as a photo no schema can say, so a
                # classify of random bytes may answer 422 (not-an-image) to valid-looking data;
                # nor can it say which callback hosts the operator allows (callback-refused).
                photo = case.method == "POST" and case.operation.path in (
                    "/v1/classify",
                    "/v1/labels",
                )
                photo = photo or "callback" in (case.query or {})
                # An Idempotency-Key the run sends again with another body is refused (422,
                # the IETF draft's rule): what came before decides, which no schema says.
                photo = photo or "idempotency-key" in {k.lower() for k in case.headers}
                case.call_and_validate(excluded_checks=[positive_data_acceptance] if photo else [])

            try:
                run()
            except Exception as exc:  # collect, so that one run reports every operation
                failures.append(f"{op.method.upper()} {op.path}: {exc}")
        assert failures == []
