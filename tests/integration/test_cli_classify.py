"""``fruitstream classify`` and ``evaluate`` as a user runs them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fruitstream.dataset import image_files
from tests.conftest import bad_images, exif_rotated_jpeg
from tests.helpers import run_cli, run_json

KEYS = {"path", "label", "guess", "confidence", "known", "top_k", "error"}


@pytest.fixture
def mixed_folder(tmp_path: Path, dataset: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for fruit in ("banana", "pineapple"):
        shutil.copy(image_files(dataset / "grocery" / "val" / fruit)[0], folder / f"{fruit}.jpg")
    shutil.copy(image_files(dataset / "grocery" / "val" / "lime")[0], folder / "nested" / "l.jpg")
    for name, data in bad_images().items():
        (folder / name).write_bytes(data)
    (folder / "rotated.jpg").write_bytes(exif_rotated_jpeg())
    return folder


def test_json_output_has_exactly_the_documented_keys(mixed_folder: Path) -> None:
    code, records = run_json("classify", str(mixed_folder), "--json", "--top-k", "2")
    assert code == 1  # some files failed
    assert len(records) == 3 + len(bad_images()) + 1
    assert all(set(r) == KEYS for r in records)
    by_name = {Path(r["path"]).name: r for r in records}
    assert by_name["banana.jpg"]["label"] == "banana"
    assert by_name["pineapple.jpg"]["label"] == "pineapple"
    assert by_name["l.jpg"]["label"] == "lime"  # found recursively
    assert by_name["banana.jpg"]["error"] is None
    assert len(by_name["banana.jpg"]["top_k"]) == 2
    assert set(by_name["banana.jpg"]["top_k"][0]) == {"label", "confidence"}
    assert "empty file" in by_name["empty.jpg"]["error"]
    assert "pixels" in by_name["bomb.png"]["error"]
    assert "truncated" in by_name["truncated.jpg"]["error"]
    assert "not an image" in by_name["random.jpg"]["error"]
    assert by_name["random.jpg"]["label"] is None
    assert by_name["rotated.jpg"]["error"] is None


def test_all_good_files_exit_zero_with_readable_lines(dataset: Path) -> None:
    photo = image_files(dataset / "grocery" / "val" / "kiwi")[0]
    out = run_cli("classify", str(photo))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{photo}: kiwi {out.stdout.strip().rsplit(' ', 1)[1]}"
    assert out.stdout.strip().endswith("%")


def test_unknown_photo_is_reported_with_closest_guess(dataset: Path) -> None:
    photos = image_files(dataset / "not-fruit" / "val")[:5]
    out = run_cli("classify", *map(str, photos))
    assert out.stdout.count("not one of the known fruits (closest: ") >= 3


def test_missing_file_is_an_error_line_not_a_crash(tmp_path: Path) -> None:
    code, records = run_json("classify", str(tmp_path / "nope.jpg"), "--json")
    assert code == 1
    assert "cannot read file" in records[0]["error"]


def test_evaluate_reports_accuracy_confusion_and_rejection(tmp_path: Path, dataset: Path) -> None:
    root = tmp_path / "eval"
    for fruit in ("banana", "pomegranate"):
        (root / fruit).mkdir(parents=True)
        for p in image_files(dataset / "grocery" / "val" / fruit)[:3]:
            shutil.copy(p, root / fruit / p.name)
    (root / "not-fruit").mkdir()
    for p in image_files(dataset / "not-fruit" / "val")[:6]:
        shutil.copy(p, root / "not-fruit" / p.name)
    code, report = run_json("evaluate", str(root), "--json")
    assert code == 0
    assert report["n"] == 6
    assert 0.5 <= report["accuracy"] <= 1.0
    assert set(report["per_class"]) == {"banana", "pomegranate"}
    assert sum(map(sum, report["confusion"])) == 6
    assert report["not_fruit"]["n"] == 6
    assert 0.0 <= report["not_fruit"]["rejection_rate"] <= 1.0
    gate = run_cli("evaluate", str(root), "--min-accuracy", "1.01")
    assert gate.returncode == 1
    assert "quality gate failed: accuracy" in gate.stderr


def test_evaluate_refuses_unknown_class_folders(tmp_path: Path) -> None:
    (tmp_path / "durian").mkdir()
    out = run_cli("evaluate", str(tmp_path))
    assert out.returncode == 2
    assert "not classes of this model: durian" in out.stderr
