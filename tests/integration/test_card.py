"""The model card says, per fruit, what a new model changed against the one it replaces."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fruitstream.model.bundle import ModelBundle, default_bundle_dir
from fruitstream.training.card import previous_figures, write_card
from tests.fakes import fake_bundle

pytestmark = pytest.mark.model


def test_previous_figures_are_the_shipped_models_per_fruit_recalls() -> None:
    before = previous_figures(default_bundle_dir())
    assert before is not None
    shipped = ModelBundle.load(default_bundle_dir())
    assert before["version"] == shipped.version
    wild = before["sets"]["wild_val"]
    assert wild["accuracy"] == shipped.metrics["wild_val"]["accuracy"]
    assert set(wild["recall"]) == {
        k for k, v in shipped.metrics["wild_val"]["per_class"].items() if v["n"]
    }


def test_previous_figures_of_a_folder_without_a_bundle_is_none(tmp_path: Path) -> None:
    assert previous_figures(tmp_path) is None


def test_the_card_compares_every_fruit_with_the_previous_model(tmp_path: Path) -> None:
    shipped = ModelBundle.load(default_bundle_dir())
    before = previous_figures(default_bundle_dir())
    assert before is not None
    metrics = {k: v for k, v in shipped.metrics.items() if k != "open_set"}
    wild = dict(metrics["wild_val"])
    wild["per_class"] = {k: dict(v) for k, v in wild["per_class"].items()}
    wild["per_class"]["mango"]["recall"] = 0.5  # a new model, better on mango
    metrics["wild_val"] = wild
    bundle = replace(
        fake_bundle(tmp_path), labels=shipped.labels, version="9",
        metrics={**metrics, "previous": before},
    )  # fmt: skip
    write_card(bundle)
    card = bundle.card_path.read_text()
    was = before["sets"]["wild_val"]["recall"]["mango"]
    assert f"| recall in v{shipped.version} | change |" in card
    assert "| mango | 48 | 50.0% |" in card
    assert f"{100 * (0.5 - was):+.1f} |" in card
    assert f"Against v{shipped.version}, the model this one replaces" in card


def test_the_card_says_how_field_photos_were_used() -> None:
    from fruitstream.training.card import _field_recipe

    assert _field_recipe({"field": False}) == []
    [default] = _field_recipe({"field": True, "field_crops": 1})
    assert "each whole and, where the photo has boxes, with 1 crop(s)" in default
    assert "same weight" in default and "at most" not in default
    [tuned] = _field_recipe(
        {"field": True, "field_crops": 2, "field_whole": False, "field_per_fruit": 150,
         "field_weight": 1.0}
    )  # fmt: skip
    assert "else only 2 crop(s)" in tuned and "(no whole tile)" in tuned
    assert "at most 150 photos a fruit" in tuned and "each weighing 1.0x" in tuned
