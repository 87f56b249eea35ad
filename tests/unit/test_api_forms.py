"""A batch's multipart body at its edges: every ``files`` part is an entry of the 202, whatever
is wrong with it; a part over the per-photo limit is never kept past the limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from tempfile import SpooledTemporaryFile
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fruitstream.entrypoints.api import create_app, forms
from tests.fakes import FakeWorld, fake_world

HEAD = {"content-type": "multipart/form-data; boundary=b0undary"}
LIMIT = 1000  # bytes a photo may have in these tests


def _body(*parts: tuple[bytes, bytes]) -> bytes:
    out = b""
    for disposition, data in parts:
        out += b"--b0undary\r\nContent-Disposition: form-data; " + disposition
        out += b"\r\nContent-Type: image/jpeg\r\n\r\n" + data + b"\r\n"
    return out + b"--b0undary--\r\n"


def _file(name: bytes, data: bytes) -> tuple[bytes, bytes]:
    return b'name="files"; filename="' + name + b'"', data


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    world = fake_world(tmp_path, max_image_bytes=LIMIT)
    yield world
    world.service.stop(timeout=5)


@pytest.fixture
def client(world: FakeWorld) -> Iterator[TestClient]:
    with TestClient(create_app(world.service, tokens=[])) as c:
        yield c


def _photos(client: TestClient, body: bytes) -> list[dict[str, Any]]:
    r = client.post("/v1/batches", content=body, headers=HEAD)
    assert r.status_code == 202, r.text
    photos: list[dict[str, Any]] = r.json()["photos"]
    return photos


def test_a_files_part_without_a_file_name_is_a_422_naming_it(client: TestClient) -> None:
    body = _body(
        _file(b"a.jpg", b"fruit:apple"),
        (b'name="files"', b"fruit:banana"),  # a text part: its bytes are not a file's
    )
    r = client.post("/v1/batches", content=body, headers=HEAD)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("body.files.1: a files part without a file name")
    # A file part with an empty file name is a file: it gets one.
    (unnamed,) = _photos(client, _body(_file(b"", b"fruit:banana")))
    assert unnamed["state"] == "queued" and unnamed["filename"] == "photo-0"


def test_a_5000_character_file_name_rejects_only_its_part(client: TestClient) -> None:
    body = _body(
        _file(b"a.jpg", b"fruit:apple"),
        _file(b"n" * 5000 + b".jpg", b"fruit:apple"),
        _file(b"b.jpg", b"fruit:banana"),
    )
    a, long, b = _photos(client, body)
    assert a["state"] == b["state"] == "queued"
    assert long["state"] == "rejected" and len(long["filename"]) == forms.NAME_LIMIT
    assert long["reason"] == "file name is 5,004 characters, over the limit of 255"


def test_a_part_over_the_photo_limit_is_rejected_and_never_stored(
    client: TestClient, world: FakeWorld
) -> None:
    body = _body(
        _file(b"big.jpg", b"fruit:apple" + b"x" * (5 * LIMIT)),
        _file(b"a.jpg", b"fruit:apple"),
    )
    big, a = _photos(client, body)
    assert big["state"] == "rejected" and "over the limit of 1,000 bytes" in big["reason"]
    assert a["state"] == "queued"
    assert [k for k in world.store.objects if big["image_id"] in k] == []


def test_an_oversized_part_is_not_kept_past_the_limit_while_it_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bytes of a part over the limit are read (the next parts come after them) but not
    written anywhere past the limit: the most any spooled file ever held is the limit."""
    most = [0]

    class Measured(SpooledTemporaryFile[bytes]):
        def write(self, data: Any) -> int:
            written = super().write(data)
            most[0] = max(most[0], self.tell())
            return written

    monkeypatch.setattr(forms, "SpooledTemporaryFile", Measured)
    big = b"fruit:apple" + b"x" * (50 * LIMIT)
    body = _body(_file(b"big.jpg", big), _file(b"a.jpg", b"fruit:apple"))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100):  # as a socket delivers it
            yield body[start : start + 100]

    form = asyncio.run(forms.read_batch(chunks(), HEAD["content-type"], 10, LIMIT))
    try:
        assert [u.size() for u in form.uploads] == [len(big), len(b"fruit:apple")]
        assert form.received == len(big) + len(b"fruit:apple")
        assert form.kept == len(b"fruit:apple")
        assert most[0] <= LIMIT  # the big part never held more than the limit
    finally:
        asyncio.run(form.close())


def test_other_fields_and_broken_bodies_are_problems(client: TestClient) -> None:
    extra = _body(_file(b"a.jpg", b"fruit:apple"), (b'name="note"', b"hello"))
    r = client.post("/v1/batches", content=extra, headers=HEAD)
    assert r.status_code == 422 and "note" in r.json()["detail"]
    broken = client.post("/v1/batches", content=b"--b0undary\r\nnonsense", headers=HEAD)
    assert broken.status_code == 422, broken.text
    no_name = _body((b'filename="a.jpg"', b"fruit:apple"))
    assert client.post("/v1/batches", content=no_name, headers=HEAD).status_code == 422
    head = {"content-type": "multipart/form-data"}
    assert client.post("/v1/batches", content=extra, headers=head).status_code == 422


def test_the_file_limit_counts_every_files_part(world: FakeWorld) -> None:
    from fruitstream.entrypoints.api.settings import ApiSettings

    app = create_app(world.service, tokens=[], settings=ApiSettings(max_batch_files=2))
    with TestClient(app) as client:
        parts = [_file(b"a.jpg", b"fruit:apple"), _file(b"c", b"x"), _file(b"b", b"y")]
        r = client.post("/v1/batches", content=_body(*parts), headers=HEAD)
        assert r.status_code == 413 and "over the limit of 2 per batch" in r.json()["detail"]
