"""Model versions over the fakes: adapt behind the guard, list, switch, roll back, follow."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fruitstream.core.adaptation import views_per_photo
from fruitstream.core.imaging import TEACHING_VIEWS
from fruitstream.domain import BASE_VERSION, Status
from fruitstream.errors import ConfigError, NotFoundError
from fruitstream.pipeline import Upload
from fruitstream.service import Backends, FruitService
from fruitstream.service.versions import FOLLOW_SECONDS
from tests.fakes import FakeClassifier, FakeWorld, fake_world


def _dataset(root: Path) -> Path:
    """The guard's held-out sets, made of the fake's photos (``fruit:<name>#<n>``)."""
    for folder, names in {
        "studio/test": ["apple", "banana", "orange"],
        "grocery/val": ["apple", "banana", "orange"],
    }.items():
        for name in names:
            (root / folder / name).mkdir(parents=True)
            for i in range(10):
                (root / folder / name / f"{i}.jpg").write_bytes(f"fruit:{name}#{i}".encode())
    (root / "not-fruit" / "val").mkdir(parents=True)
    for i in range(10):
        (root / "not-fruit" / "val" / f"rock_{i}.jpg").write_bytes(f"fruit:?#{i}".encode())
    (root / "other-fruit" / "test").mkdir(parents=True)
    for i in range(10):
        (root / "other-fruit" / "test" / f"papaya_{i}_100.jpg").write_bytes(
            f"fruit:papaya#{i}".encode()
        )
    return root


@pytest.fixture
def world(tmp_path: Path) -> FakeWorld:
    return fake_world(tmp_path, dataset_dir=_dataset(tmp_path / "fruits15"))


def _teach(service: FruitService, label: str, kind: str, n: int, start: int = 100) -> None:
    for i in range(start, start + n):
        service.label(label, data=f"fruit:{kind}#{i}".encode(), source="cli")


def test_adapt_teaches_a_new_fruit_behind_the_guard(world: FakeWorld) -> None:
    service = world.service
    assert not service.classify_one(b"fruit:mango#1").known
    _teach(service, "mango", "mango", 6)
    _teach(service, "apple", "apple", 3)
    report = service.adapt()
    assert report.active, report.version.refused
    v = report.version
    assert (v.version, v.parent, v.labels_used) == ("a1", BASE_VERSION, 9)
    assert v.classes == ("apple", "banana", "orange", "mango")
    assert set(v.figures) >= {"studio/test", "grocery/val", "not-fruit/val", "other-fruit/test"}
    answer = service.classify_one(b"fruit:mango#1")
    assert (answer.label, answer.known) == ("mango", True)
    assert service.classify_one(b"fruit:banana#1").label == "banana"
    assert world.store.get(v.head_key)  # the head is where every process can fetch it
    assert service.models() == ([v], "a1")
    assert "fake v0.1 + adapted version a1" in service.model_health().detail


def test_a_labelled_photos_views_are_embedded_once(world: FakeWorld) -> None:
    service = world.service
    _teach(service, "mango", "mango", 6)
    service.adapt()
    wanted = views_per_photo(6)
    assert wanted == len(TEACHING_VIEWS)
    assert world.classifier.views_embedded == 6 * wanted
    service.adapt()
    assert world.classifier.views_embedded == 6 * wanted  # cached by the photos' content
    _teach(service, "mango", "mango", 1, start=200)
    report = service.adapt()
    assert world.classifier.views_embedded == 7 * wanted  # only the new photo's
    assert report.version.labels_used == 7
    assert service.classify_one(b"fruit:mango#1").label == "mango"


def test_the_guard_keeps_a_version_that_loses_a_held_out_set(world: FakeWorld) -> None:
    service = world.service
    # Someone calls apples bananas: studio/test and grocery/val apples would be lost.
    _teach(service, "banana", "apple", 8)
    report = service.adapt()
    assert not report.active
    assert any(r.startswith("studio/test:") and "points" in r for r in report.version.refused)
    assert service.classify_one(b"fruit:apple#1").label == "apple"  # the live one answers
    assert service.models()[1] == BASE_VERSION
    forced = service.adapt(force=True)
    assert forced.active and forced.version.version == "a2"
    assert service.classify_one(b"fruit:apple#1").label == "banana"


def test_without_the_held_out_sets_nothing_goes_live_unforced(tmp_path: Path) -> None:
    world = fake_world(tmp_path, dataset_dir=tmp_path / "nowhere")
    _teach(world.service, "mango", "mango", 5)
    report = world.service.adapt()
    assert not report.active
    assert "held-out sets are not under" in report.version.refused[0]


def test_labels_short_of_photos_wait_and_nothing_to_adapt_is_an_error(world: FakeWorld) -> None:
    with pytest.raises(ConfigError, match="no labels yet"):
        world.service.adapt()
    _teach(world.service, "kiwi", "mango", 2)
    _teach(world.service, "apple", "apple", 2)
    report = world.service.adapt()
    assert report.waiting == {"kiwi": 2}
    assert "kiwi" not in report.version.classes


def test_activate_and_rollback(world: FakeWorld) -> None:
    service = world.service
    with pytest.raises(ConfigError, match="nothing to roll back"):
        service.rollback()
    with pytest.raises(NotFoundError):
        service.activate("a9")
    _teach(service, "mango", "mango", 5)
    service.adapt()
    _teach(service, "mango", "mango", 5, start=200)
    second = service.adapt()
    assert second.version.parent == "a1"
    assert service.rollback() == "a1"
    assert service.rollback() == BASE_VERSION
    service.versions.follow(service.classifier, force=True)
    assert not service.classify_one(b"fruit:mango#1").known
    service.activate("a2")
    assert service.classify_one(b"fruit:mango#1").label == "mango"


def test_another_process_follows_the_live_version_within_a_poll(
    world: FakeWorld, tmp_path: Path
) -> None:
    """A second service over the same database and store (another process: the API, a
    worker, a Spark executor) answers with the version activated by the first."""
    other_clf = FakeClassifier(world.classifier.bundle)
    other = FruitService(
        world.service.settings,
        Backends(world.service.settings, world.store, world.queue, world.db, None),
        classifier=lambda: other_clf,
    )
    assert not other.classify_one(b"fruit:mango#1").known
    _teach(world.service, "mango", "mango", 6)
    world.service.adapt()
    time.sleep(FOLLOW_SECONDS + 0.1)
    assert other.classify_one(b"fruit:mango#1").label == "mango"
    world.service.rollback()
    time.sleep(FOLLOW_SECONDS + 0.1)
    assert not other.classify_one(b"fruit:mango#1").known


def test_result_rows_carry_the_version_that_made_them(world: FakeWorld) -> None:
    service = world.service
    _teach(service, "mango", "mango", 6)
    service.adapt()
    report = service.submit([Upload("m.jpg", b"fruit:mango#7")])
    assert service.wait(report.session_id, timeout=10).done
    (row,) = service.results(report.session_id)
    assert row.status == Status.OK and row.label == "mango"
    assert row.model_version == "fake:0.1+a1"


def test_adapt_every_n_labels(tmp_path: Path) -> None:
    world = fake_world(tmp_path, dataset_dir=_dataset(tmp_path / "fruits15"), adapt_every=5)
    _teach(world.service, "mango", "mango", 4)
    assert world.service.models()[0] == []
    _teach(world.service, "mango", "mango", 1, start=300)
    deadline = time.monotonic() + 10
    while not world.service.models()[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    versions, live = world.service.models()
    assert [v.labels_used for v in versions] == [5]
    assert live == "a1"
