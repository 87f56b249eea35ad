"""The API's documents against what it sends: each schema's properties are the JSON keys its
route answers with, and those are the domain record's fields (``schemas.mirrors``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fruitstream.domain import Label, Prediction, Progress, ResultRow, SessionRecord, TopK
from fruitstream.entrypoints.api import create_app
from fruitstream.pipeline import Receipt
from fruitstream.service import FileResult
from tests.fakes import fake_world


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    world = fake_world(tmp_path)
    with TestClient(create_app(world.service, tokens=[])) as c:
        yield c
    world.service.stop(timeout=5)


def _properties(client: TestClient, name: str) -> list[str]:
    """The properties of component ``name`` of the served OpenAPI document, in order; each
    one required (every key is always sent)."""
    schema = client.get("/openapi.json").json()["components"]["schemas"][name]
    assert sorted(schema["required"]) == sorted(schema["properties"]), name
    return list(schema["properties"])


def _names(record: type[Any]) -> list[str]:
    return [f.name for f in fields(record)]


def _finished_batch(client: TestClient) -> tuple[dict[str, Any], str]:
    files = [
        ("files", ("apple.jpg", b"fruit:apple", "image/jpeg")),
        ("files", ("empty.jpg", b"", "image/jpeg")),
    ]
    batch = client.post("/v1/batches", files=files).json()
    sid = str(batch["session_id"])
    deadline = time.monotonic() + 30
    while not client.get(f"/v1/batches/{sid}").json()["complete"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return batch, sid


def test_result_rows_sent_are_the_result_schema(client: TestClient) -> None:
    _batch, sid = _finished_batch(client)
    rows = client.get(f"/v1/batches/{sid}/results").json()
    assert {row["status"] for row in rows} == {"ok", "error"}
    expected = _properties(client, "ResultOut")
    assert expected == _names(ResultRow)
    assert all(list(row) == expected for row in rows)
    top_k = [item for row in rows for item in row["top_k"]]
    assert top_k and all(list(item) == _properties(client, "TopKOut") for item in top_k)
    assert _properties(client, "TopKOut") == _names(TopK)


def test_batch_progress_and_history_sent_are_their_schemas(client: TestClient) -> None:
    batch, sid = _finished_batch(client)
    photo = _properties(client, "PhotoOut")
    assert photo == _names(Receipt)
    assert all(list(p) == photo for p in batch["photos"])
    progress = client.get(f"/v1/batches/{sid}").json()
    assert list(progress) == _properties(client, "ProgressOut") == [*_names(Progress), "complete"]
    (session,) = client.get("/v1/batches").json()
    expected = _properties(client, "SessionOut")
    assert list(session) == expected == [*_names(Progress), "complete", "name", "created_at"]
    assert set(expected) - set(_names(Progress)) - {"complete"} <= set(_names(SessionRecord))


def test_labels_sent_are_the_label_schema(client: TestClient) -> None:
    made = client.post(
        "/v1/labels", files={"file": ("p.jpg", b"fruit:?")}, data={"label": "papaya"}
    )
    assert made.status_code == 201, made.text
    expected = _properties(client, "LabelOut")
    assert list(made.json()) == expected == _names(Label)
    assert all(list(x) == expected for x in client.get("/v1/labels").json())


def test_classify_and_readiness_sent_are_their_schemas(client: TestClient) -> None:
    expected = _properties(client, "ClassifyOut")
    answer = client.post("/v1/classify", content=b"fruit:apple").json()
    assert list(answer) == expected
    assert list(FileResult("x.jpg", None, "not an image").to_dict()) == expected
    # The prediction's own fields are among them, under the same names.
    assert set(_names(Prediction)) <= set(expected)
    checks = client.get("/readyz").json()["checks"]
    assert checks and all(list(c) == _properties(client, "CheckOut") for c in checks)
