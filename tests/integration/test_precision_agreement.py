"""The int8 and fp32 graphs agree on this machine's CPU, and ``auto`` picks by its features."""

from __future__ import annotations

from pathlib import Path

import pytest

from fruitstream.bootstrap import load_bundle
from fruitstream.config import Settings
from fruitstream.core.classifier import Classifier
from fruitstream.core.precision import MAX_INT8_LOSS, cpu_features
from fruitstream.dataset import labelled_images
from fruitstream.domain import Prediction
from fruitstream.model.bundle import ModelBundle, default_bundle_dir

pytestmark = [pytest.mark.dataset, pytest.mark.slow]


def _labels(clf: Classifier, files: list[Path]) -> list[str]:
    outcomes = clf.classify_many([p.read_bytes() for p in files])
    assert all(isinstance(o, Prediction) for o in outcomes)
    return [o.label for o in outcomes if isinstance(o, Prediction)]


@pytest.fixture(scope="module")
def graphs() -> dict[str, Classifier]:
    bundle = ModelBundle.load(default_bundle_dir())
    return {p: Classifier(bundle.with_precision(p)) for p in ("int8", "fp32")}


def test_int8_gives_fp32_labels_on_studio_and_grocery(
    dataset: Path, graphs: dict[str, Classifier]
) -> None:
    files = [p for p, _ in labelled_images(dataset / "studio" / "test")]
    files += [p for p, _ in labelled_images(dataset / "grocery" / "val")]
    int8, fp32 = _labels(graphs["int8"], files), _labels(graphs["fp32"], files)
    same = sum(a == b for a, b in zip(int8, fp32, strict=True))
    assert same / len(files) >= 0.99, f"{same} of {len(files)} labels agree on {cpu_features()}"


def test_int8_top1_is_within_half_a_point_on_wild(
    dataset: Path, graphs: dict[str, Classifier]
) -> None:
    items = labelled_images(dataset / "wild" / "val")
    truths = [c for _, c in items]
    files = [p for p, _ in items]
    accuracy = {
        p: sum(a == t for a, t in zip(_labels(clf, files), truths, strict=True)) / len(files)
        for p, clf in graphs.items()
    }
    assert abs(accuracy["int8"] - accuracy["fp32"]) <= MAX_INT8_LOSS, accuracy


def test_auto_picks_int8_exactly_where_this_cpu_has_an_int8_dot_product() -> None:
    bundle = load_bundle(Settings(model_precision="auto"))
    expected = "int8" if cpu_features().int8_dot else "fp32"
    assert bundle.precision == expected, bundle.precision_reason
    assert bundle.precision_reason.startswith("auto:")
    assert load_bundle(Settings(model_precision="fp32")).precision == "fp32"
    assert load_bundle(Settings(model_precision="int8")).precision == "int8"
