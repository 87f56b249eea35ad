"""The HTTP API over the fakes (no model, no server): what a batch's 202 says of each file."""

from __future__ import annotations

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
