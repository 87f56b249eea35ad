"""The served OpenAPI document: valid (openapi-spec-validator) and every answer the server can
send declared in it (the schemathesis run: tests/integration/test_openapi_schemathesis.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fruitstream.entrypoints.api import create_app
from fruitstream.entrypoints.api.problems import HTTP_ERROR, KINDS
from tests.fakes import fake_world

TOKEN = "openapi-token-0123456789"
METHODS = {"get", "head", "post", "put", "patch", "delete", "options"}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "HTTP_API.md"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    world = fake_world(tmp_path)
    with TestClient(create_app(world.service, tokens=[TOKEN])) as c:
        yield c
    world.service.stop(timeout=5)


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def test_the_served_document_is_valid_openapi(client: TestClient) -> None:
    from openapi_spec_validator import validate

    doc = client.get("/openapi.json").json()
    validate(doc)  # every path parameter declared, every $ref resolved, the 3.1 schema
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert {"LabelIn", "Problem"} <= refs <= set(doc["components"]["schemas"])


def test_each_route_declares_the_problems_it_can_send(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    declared = {(m, p): set(op["responses"]) for p, m, op in _operations(doc)}
    for (method, path), statuses in declared.items():
        assert "500" in statuses, (method, path)
        if method != "options":
            assert "405" in statuses, (method, path)
    # Only what the route can answer: no token check on the probes, no 415 without a body...
    assert declared[("get", "/healthz")] == {"200", "405", "500"}
    assert "401" not in declared[("get", "/readyz")]
    assert "415" not in declared[("get", "/v1/batches/{session_id}")]
    assert "406" in declared[("get", "/v1/batches/{session_id}/results")]
    assert "406" not in declared[("get", "/v1/batches")]
    assert "409" in declared[("post", "/v1/batches")]
    assert {"401", "404", "413", "429", "503"} <= declared[("delete", "/v1/labels/{label_id}")]
    assert {"400", "415", "422"} <= declared[("post", "/v1/classify")]
    for path, method, op in _operations(doc):
        for status, answer in op["responses"].items():
            if status >= "400" and (path, status) != ("/readyz", "503"):  # readiness: ReadyOut
                content = answer["content"]
                assert list(content) == ["application/problem+json"], (method, path, status)
                assert content["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"
                }
        headers = {s: set(a.get("headers", {})) for s, a in op["responses"].items()}
        assert "WWW-Authenticate" in headers.get("401", {"WWW-Authenticate"}), (method, path)
        assert "Retry-After" in headers.get("429", {"Retry-After"}), (method, path)
        assert "Allow" in headers.get("405", {"Allow"}), (method, path)


def test_every_problem_type_is_documented() -> None:
    text = DOCS.read_text()
    for slug in {k.slug for k in KINDS} | {HTTP_ERROR}:
        assert f"`{slug}`" in text, slug


def test_head_and_options_answer_on_every_path_of_the_document(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    auth = {"authorization": f"Bearer {TOKEN}"}
    for path, item in doc["paths"].items():
        url = re.sub(r"{\w+}", "x", path)
        methods = {m.upper() for m in item if m in METHODS}
        options = client.options(url)
        assert options.status_code == 204, path
        assert set(options.headers["allow"].split(", ")) == methods, path
        if "GET" in methods:
            assert client.head(url, headers=auth).status_code != 405, path
        refused = client.put(url, headers=auth)
        assert refused.status_code == 405 and refused.headers["allow"] == options.headers["allow"]
