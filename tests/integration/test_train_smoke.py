"""``fruitstream train`` for real on a tiny subset: the recipe runs end to end on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fruitstream.classifier import Classifier, Prediction
from fruitstream.dataset import image_files
from fruitstream.model.bundle import ModelBundle
from tests.helpers import run_cli

pytest.importorskip("torch", reason="needs the 'train' extra: pip install 'fruitstream[train]'")


@pytest.mark.slow
def test_tiny_training_run_writes_a_working_bundle(tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "model"
    result = run_cli(
        "train", "--data", str(dataset), "--out", str(out),
        "--classes", "banana,lemon,pineapple", "--max-per-class", "6", "--size", "96",
        "--real-views", "2", "--steps", "30", "--folds", "2", "--finetune-epochs", "1",
        "--no-cache", "--version", "smoke",
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    bundle = ModelBundle.load(out)
    assert bundle.labels == ("banana", "lemon", "pineapple")
    assert bundle.version == "smoke"
    assert bundle.preprocess.input_size == 96
    assert bundle.name == "fruits15-efficientnet-lite2"
    meta = json.loads((out / "bundle.json").read_text())
    assert {"calibration", "studio_test", "grocery_val", "not_fruit_val"} <= set(meta["metrics"])
    assert meta["metrics"]["studio_test"]["n"] == 3 * 150
    card = bundle.card_path.read_text()
    assert "Fruits-360" in card and "Grocery Store Dataset" in card
    assert "EfficientNet-Lite2" in card
    clf = Classifier(bundle)
    assert clf.takes_pixels  # the graph normalizes uint8 pixels itself
    photo = image_files(dataset / "grocery" / "val" / "banana")[0]
    pred = clf.classify(photo.read_bytes())
    assert isinstance(pred, Prediction)
    assert pred.label in bundle.labels


def test_train_without_the_dataset_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("train", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "m"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_unknown_backbone_is_a_clear_error(tmp_path: Path, dataset: Path) -> None:
    result = run_cli(
        "train", "--data", str(dataset), "--out", str(tmp_path / "m"), "--backbone", "resnet-1"
    )
    assert result.returncode == 2
    assert "unknown backbone 'resnet-1'" in result.stderr
    assert "efficientnet-lite2" in result.stderr
