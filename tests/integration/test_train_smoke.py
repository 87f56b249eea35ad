"""``fruitstream train`` for real on a tiny subset: the recipe runs end to end on a CPU, synthetic
scenes, fine-tuning, calibration and the int8 export included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fruitstream.core.classifier import Classifier
from fruitstream.dataset import image_files
from fruitstream.domain import Prediction
from fruitstream.model.bundle import ModelBundle
from tests.helpers import run_cli

pytest.importorskip("torch", reason="needs the 'train' extra: pip install 'fruitstream[train]'")


@pytest.mark.slow
def test_tiny_training_run_writes_a_working_bundle(tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "model"
    result = run_cli(
        "train", "--data", str(dataset), "--out", str(out),
        "--classes", "banana,grape,pineapple", "--max-per-class", "6", "--size", "96",
        "--real-views", "2", "--steps", "30", "--finetune-epochs", "1",
        "--no-cache", "--version", "smoke",
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    bundle = ModelBundle.load(out)
    assert bundle.labels == ("banana", "grape", "pineapple")
    assert bundle.version == "smoke"
    assert bundle.preprocess.input_size == 96
    assert bundle.name == "fruits15-efficientnet-lite2"
    meta = json.loads((out / "bundle.json").read_text())
    metrics = meta["metrics"]
    held_out = {"studio_test", "grocery_val", "not_fruit_val", "other_fruit_test", "wild_val"}
    assert {"calibration", "fp32"} | held_out <= set(metrics)
    assert held_out <= set(metrics["fp32"])  # the fp32 graph measured on the same sets
    assert metrics["studio_test"]["n"] == 3 * 150
    assert metrics["wild_val"]["per_class"]["grape"]["n"] == 26  # wild/val is measured too
    assert metrics["wild_val"]["not_fruit"]["n"] == 318  # with wild/val-other as negatives
    calib = metrics["calibration"]
    assert calib["temperature"] > 0 and 0 <= calib["ece_after"] <= 1
    training = meta["training"]
    assert (
        training["config"]["scenes_per_class"] == 360 and training["config"]["max_per_class"] == 6
    )
    assert training["total_seconds"] > 0
    # The fine-tuning curves: every step's loss, the held-out figures before and after epoch 1.
    curves = training["curves"]
    assert len(curves["step_ce"]) > 0 and all(v > 0 for v in curves["step_ce"])
    assert len(curves["epoch_held_ce"]) == len(curves["epoch_held_top1"]) == 2
    # Grape's field photos trained it (field/ is on by default), credited in the card.
    assert training["config"]["field"] is True
    # v4's rule: known when "none of these" is unlikely enough; the figures show both.
    assert bundle.reject_below is not None and 0 < bundle.reject_below < 1
    assert calib["known_rule"] == "not-none"
    # int8 is the default graph, the fp32 one ships beside it.
    assert bundle.precision == "int8"
    assert bundle.onnx_path.name == "model.int8.onnx"
    assert (out / "model.onnx").stat().st_size > 2 * bundle.onnx_path.stat().st_size
    card = bundle.card_path.read_text()
    assert "Fruits-360" in card and "Grocery Store Dataset" in card
    assert "EfficientNet-Lite2" in card
    assert "wild/val" in card and "ECE" in card and "Training took" in card
    assert "IAGI" in card and "AppleBBCH81" in card and "field/train" in card
    assert "'none of these' probability <" in card
    assert "## The unknown answer" in card and "| not-none (shipped) |" in card
    assert set(metrics["open_set"]["scores"]) == {
        "top-fruit", "not-none", "energy", "mahalanobis", "knn"
    }  # fmt: skip
    for figure in ("training_curves.png", "confusion_wild.png", "open_set.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({figure})" in card
    for precision in ("int8", "fp32"):
        clf = Classifier(bundle.with_precision(precision))
        assert clf.takes_pixels  # the graph normalizes uint8 pixels itself
        for photo in (
            image_files(dataset / "grocery" / "val" / "banana")[0],
            image_files(dataset / "wild" / "val" / "grape")[0],
        ):
            pred = clf.classify(photo.read_bytes())
            assert isinstance(pred, Prediction)
            assert pred.label in bundle.labels
    assert bundle.preprocess.interpolation == "box-bilinear"  # the recipe's resize

    # --requantize writes the int8 graph again, with another resize, and keeps the weights.
    fp32_bytes = (out / "model.onnx").read_bytes()
    result = run_cli(
        "train", "--data", str(dataset), "--requantize", str(out), "--interpolation", "bilinear",
        "--version", "smoke.1", "--no-eval",
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    again = ModelBundle.load(out)
    assert (out / "model.onnx").read_bytes() == fp32_bytes
    assert again.version == "smoke.1" and again.precision == "int8"
    assert again.preprocess.interpolation == "bilinear"
    assert again.known_threshold == bundle.known_threshold
    assert again.reject_below == bundle.reject_below
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["training"]["trained_interpolation"] == "box-bilinear"
    assert meta["training"]["config"]["quant_calibration"] == 512
    # Not measured again (--no-eval): the old graph's figures are gone, not left standing.
    assert set(meta["metrics"]) == {"calibration"}
    assert "--requantize" in again.card_path.read_text()
    photo = image_files(dataset / "grocery" / "val" / "banana")[0]
    assert Classifier(again).classify(photo.read_bytes()).label in again.labels

    # --plot measures the open-set scores again and draws the card's figures again.
    for figure in ("training_curves.png", "confusion_wild.png", "open_set.png"):
        (out / figure).unlink()
    result = run_cli("train", "--data", str(dataset), "--plot", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all((out / f).is_file() for f in ("training_curves.png", "open_set.png"))
    assert "## The unknown answer" in again.card_path.read_text()


def test_contact_sheet_of_generated_scenes(tmp_path: Path, dataset: Path) -> None:
    sheet = tmp_path / "scenes.png"
    result = run_cli(
        "train", "--data", str(dataset), "--classes", "grape,cherry", "--max-per-class", "4",
        "--contact-sheet", str(sheet),
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    from PIL import Image

    with Image.open(sheet) as img:
        # A row per class and one of negatives, four scenes each (the cap), 160 px tiles.
        assert img.size == (4 * 160, 3 * 160)


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
