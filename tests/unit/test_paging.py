"""Pages of sessions and of result rows through the API with cursors (the databases' own
paging is in the contract suite: ``tests/contracts.py``)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from fruitstream.entrypoints.api import create_app
from tests.contracts import fill
from tests.fakes import fake_world


def test_the_api_pages_with_cursors_and_links(tmp_path: Path) -> None:
    world = fake_world(tmp_path)
    ids = fill(world.db, sessions=3, rows=5)
    with TestClient(create_app(world.service, tokens=[])) as client:
        first = client.get("/v1/batches?limit=2")
        assert len(first.json()) == 2
        cursor = first.headers["x-next-cursor"]
        assert f"cursor={cursor}" in first.headers["link"] and 'rel="next"' in first.headers["link"]
        last = client.get(f"/v1/batches?limit=2&cursor={cursor}")
        assert len(last.json()) == 1 and "x-next-cursor" not in last.headers
        assert {b["session_id"] for b in first.json() + last.json()} == set(ids)
        rows = client.get(f"/v1/batches/{ids[0]}/results?limit=3")
        more = client.get(
            f"/v1/batches/{ids[0]}/results?limit=3&cursor={rows.headers['x-next-cursor']}"
        )
        assert len(rows.json()) == 3 and len(more.json()) == 2
        bad = client.get(f"/v1/batches/{ids[0]}/results?cursor=nope")
        assert bad.status_code == 404 and bad.json()["type"].endswith(":unknown-cursor")
        assert len(client.get("/v1/batches?cursor=").json()) == 3  # empty: the first page
        assert client.get("/v1/batches?limit=0").status_code == 422
        assert client.get("/v1/batches?limit=1001").status_code == 422
    world.service.stop(timeout=5)
