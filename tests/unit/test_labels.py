"""Labels: a person's word on a photo, beside the model's, kept with its history; by image id
or with the photo; through the service, the API and the SQL store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fruitstream.adapters.sql import SqlDatabase
from fruitstream.domain import Label, new_id, normalize_label, utcnow
from fruitstream.entrypoints.api import create_app
from fruitstream.errors import ImageError, LabelError, NotFoundError
from fruitstream.pipeline import Upload
from tests.fakes import FakeWorld, MemoryResultsDatabase, fake_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    w = fake_world(tmp_path)
    yield w
    w.service.stop(timeout=5)


def _classified(world: FakeWorld, *photos: tuple[str, bytes]) -> list[str]:
    report = world.service.submit([Upload(n, d) for n, d in photos])
    assert world.service.wait(report.session_id, timeout=10, poll=0.02).complete
    return [p.image_id for p in report.photos]


@pytest.mark.parametrize(
    ("given", "stored"),
    [("Banana", "banana"), ("  passion   fruit ", "passion fruit"), ("not fruit", "not-fruit"),
     ("dragon_fruit", "dragon fruit"), ("NOT-FRUIT", "not-fruit")],
)  # fmt: skip
def test_labels_are_normalized(given: str, stored: str) -> None:
    assert normalize_label(given) == stored


@pytest.mark.parametrize("bad", ["", " ", "a", "x" * 41, "<script>", "ba/nana", "-pear"])
def test_absurd_labels_are_refused(bad: str) -> None:
    with pytest.raises(LabelError):
        normalize_label(bad)


def test_a_batch_photo_is_labelled_beside_the_models_answer(world: FakeWorld) -> None:
    unsure, sure = _classified(world, ("a.jpg", b"fruit:?"), ("b.jpg", b"fruit:banana"))
    made = world.service.label("Mango", image_id=unsure, source="app")
    assert (made.label, made.model_label, made.model_known) == ("mango", "apple", False)
    assert made.image_id == unsure and made.model_version == "fake:0.1"
    confirm = world.service.label("banana", image_id=sure, source="app")  # "yes, banana"
    assert confirm.model_label == "banana" and confirm.model_known is True
    assert [x.label for x in world.service.labels()] == ["banana", "mango"]
    with pytest.raises(NotFoundError):
        world.service.label("kiwi", image_id="no-such-image")
    with pytest.raises(LabelError):
        world.service.label("?!", image_id=sure)
    assert len(world.service.labels()) == 2  # nothing else was lost


def test_the_same_photo_twice_is_one_photo_the_last_label_wins(world: FakeWorld) -> None:
    first = world.service.label("lemon", data=b"fruit:?", filename="x.jpg")
    second = world.service.label("lime", data=b"fruit:?", filename="y.png")
    assert first.content_sha256 == second.content_sha256
    assert [x.label for x in world.service.labels()] == ["lime"]
    assert world.store.get(second.object_key) == b"fruit:?"  # kept to learn from
    world.service.unlabel(second.label_id)
    assert [x.label for x in world.service.labels()] == ["lemon"]  # the history is kept
    with pytest.raises(ImageError):
        world.service.label("lemon", data=b"not a photo")
    with pytest.raises(LabelError):
        world.service.label("lemon")  # neither an image id nor a photo


def test_teach_labels_a_folder_per_label(world: FakeWorld, tmp_path: Path) -> None:
    root = tmp_path / "teach"
    for label, photos in {
        "papaya": [b"fruit:?", b"fruit:apple"],
        "not-fruit": [b"fruit:x"],
    }.items():
        (root / label).mkdir(parents=True)
        for i, data in enumerate(photos):
            (root / label / f"{i}.jpg").write_bytes(data)
    (root / "papaya" / "broken.jpg").write_bytes(b"junk")
    report = world.service.teach(root)
    assert sorted(x.label for x in report.labels) == ["not-fruit", "papaya", "papaya"]
    assert [p.name for p, _why in report.skipped] == ["broken.jpg"]
    assert {x.source for x in report.labels} == {"teach"}


def test_labels_on_sql_keep_history_and_page(tmp_path: Path) -> None:
    for db in (SqlDatabase.from_url(f"sqlite:///{tmp_path / 'l.db'}"), MemoryResultsDatabase()):
        now = utcnow()
        made = []
        for i, (content, label) in enumerate(
            [("c1", "kiwi"), ("c2", "pear"), ("c1", "lime"), ("c3", "fig")]
        ):
            entry = Label(
                new_id(), content, "k", label, None, None, "m:1", "cli", now + timedelta(seconds=i)
            )
            db.add_label(entry)
            made.append(entry)
        assert [x.label for x in db.labels()] == ["fig", "lime", "pear"]
        page = db.labels(limit=2)
        assert [x.label for x in db.labels(limit=2, before=page[-1].label_id)] == ["pear"]
        removed = db.remove_label(made[2].label_id)
        assert removed.label == "lime"
        assert [x.label for x in db.labels()] == ["fig", "pear", "kiwi"]
        with pytest.raises(NotFoundError):
            db.remove_label("nope")


def test_the_label_routes(world: FakeWorld) -> None:
    (sure,) = _classified(world, ("b.jpg", b"fruit:banana"))
    with TestClient(create_app(world.service, tokens=[])) as client:
        by_id = client.post("/v1/labels", json={"image_id": sure, "label": "Banana"})
        assert by_id.status_code == 201 and by_id.json()["label"] == "banana"
        with_photo = client.post(
            "/v1/labels", files={"file": ("p.jpg", b"fruit:?")}, data={"label": "papaya"}
        )
        assert with_photo.status_code == 201 and with_photo.json()["model_known"] is False
        listed = client.get("/v1/labels?limit=1")
        assert [x["label"] for x in listed.json()] == [
            "papaya"
        ] and "x-next-cursor" in listed.headers
        gone = client.delete(f"/v1/labels/{with_photo.json()['label_id']}")
        assert gone.status_code == 204
        assert [x["label"] for x in client.get("/v1/labels").json()] == ["banana"]
        bad = client.post("/v1/labels", json={"image_id": sure, "label": "<b>"})
        assert bad.status_code == 422 and bad.json()["type"].endswith(":invalid-request")
        unknown = client.post("/v1/labels", json={"image_id": "nope", "label": "kiwi"})
        assert unknown.status_code == 404
        assert client.delete("/v1/labels/nope").status_code == 404
        assert (
            client.post(
                "/v1/labels", content=b"x", headers={"content-type": "text/plain"}
            ).status_code
            == 415
        )
