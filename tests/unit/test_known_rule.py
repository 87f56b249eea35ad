"""The bundle's "known" rule: from v4, "none of these" below ``reject_below``; before, the top
fruit against ``known_threshold``; kept through bundle.json and handed to adapted versions."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fruitstream.errors import ModelError
from fruitstream.model.bundle import ModelBundle, default_bundle_dir
from fruitstream.model.head import known_mask, known_score
from tests.fakes import fake_bundle

# apple / banana / cherry / none: a close call, a sure fruit, a photo of none of them
PROBS = np.array(
    [[0.45, 0.45, 0.0, 0.10], [0.90, 0.05, 0.0, 0.05], [0.20, 0.10, 0.0, 0.70]], np.float32
)


def _bundle(tmp_path: Path) -> ModelBundle:
    bundle = fake_bundle(tmp_path)
    assert len(bundle.labels) == 3
    return bundle


def test_top_fruit_rule_calls_a_close_call_unknown(tmp_path: Path) -> None:
    bundle = replace(_bundle(tmp_path), known_threshold=0.5)
    assert bundle.known(PROBS).tolist() == [False, True, False]


def test_not_none_rule_calls_a_close_call_known(tmp_path: Path) -> None:
    bundle = replace(_bundle(tmp_path), known_threshold=0.5, reject_below=0.3)
    assert bundle.known(PROBS).tolist() == [True, True, False]


def test_the_rule_survives_bundle_json_and_reaches_the_base_head(tmp_path: Path) -> None:
    bundle = replace(_bundle(tmp_path), reject_below=0.3)
    bundle.save_metadata()
    again = ModelBundle.load(tmp_path)
    assert again.reject_below == 0.3
    head = again.base_head()
    assert head.reject_below == 0.3 and head.reject_rule_fruits == 3
    assert head.known(PROBS).tolist() == [True, True, False]
    # A bundle written before v4 has no reject_below and keeps its top-fruit rule.
    (tmp_path / "old").mkdir()
    meta_path = _bundle(tmp_path / "old").path / "bundle.json"
    meta = json.loads(meta_path.read_text())
    del meta["reject_below"]
    meta_path.write_text(json.dumps(meta))
    old = ModelBundle.load(meta_path.parent)
    assert old.reject_below is None and old.base_head().reject_below is None
    assert old.known(PROBS).tolist() == [False, True, False]


def test_bundle_json_names_the_rule_and_refuses_a_name_that_contradicts_it(
    tmp_path: Path,
) -> None:
    bundle = replace(_bundle(tmp_path), reject_below=0.3)
    bundle.save_metadata()
    meta = json.loads((tmp_path / "bundle.json").read_text())
    assert meta["known_rule"] == "not-none"
    meta["known_rule"] = "top-fruit"
    (tmp_path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="names the known rule"):
        ModelBundle.load(tmp_path)


def test_the_shipped_bundle_names_its_rule() -> None:
    meta = json.loads((default_bundle_dir() / "bundle.json").read_text())
    assert meta["known_rule"] == "top-fruit" and meta["reject_below"] is None


def test_the_runtime_rule_reads_the_one_score_as_it_read_the_probabilities() -> None:
    """``known_mask`` through ``known_score`` calls the very photos known that comparing
    p(none) with ``reject_below`` did, at cuts taken from the photos themselves (ties)."""
    rng = np.random.default_rng(0)
    for trial in range(20):
        z = rng.normal(size=(5000, 5)) * rng.uniform(0.5, 20)
        probs = np.exp(z - z.max(axis=1, keepdims=True))
        probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
        below = float(probs[trial, -1]) if trial % 2 else float(rng.uniform(0.01, 0.99))
        fruit = probs[:, :4]
        before = np.where(fruit.argmax(axis=1) < 3, probs[:, -1] < below, fruit.max(axis=1) >= 0.5)
        assert (known_mask(probs, 4, 0.5, below, 3) == before).all()
    assert known_score(PROBS, 3, "not-none").tolist() == pytest.approx([0.9, 0.95, 0.3])
    assert known_score(PROBS, 3, "top-fruit").tolist() == pytest.approx([0.45, 0.9, 0.2])
