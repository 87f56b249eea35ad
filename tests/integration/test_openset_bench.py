"""`fruitstream bench --open-set` and `--tta` on the shipped model, over a small copy of the
held-out sets (links to the first photos of each folder): every score measured at its
operating point, the trade-off curves drawn, the test-time views timed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fruitstream.core.openset import SCORES
from fruitstream.model.bundle import ANCHORS_FILE, default_bundle_dir
from tests.helpers import run_cli

PER_FOLDER = 6

pytestmark = pytest.mark.model


def _mini(dataset: Path, root: Path) -> Path:
    """A fruits15 tree with the first PER_FOLDER photos of every folder the benches read."""
    for rel in ("wild/val", "grocery/val", "studio/test"):
        for fruit in sorted(p for p in (dataset / rel).iterdir() if p.is_dir()):
            (root / rel / fruit.name).mkdir(parents=True)
            for photo in sorted(fruit.iterdir())[:PER_FOLDER]:
                (root / rel / fruit.name / photo.name).symlink_to(photo)
    for rel in ("wild/val-other", "not-fruit/val", "other-fruit/test"):
        (root / rel).mkdir(parents=True)
        for photo in sorted((dataset / rel).iterdir())[: PER_FOLDER * 5]:
            (root / rel / photo.name).symlink_to(photo)
    return root


def test_open_set_bench_measures_every_score_and_draws_the_curves(
    dataset: Path, tmp_path: Path
) -> None:
    root = _mini(dataset, tmp_path / "fruits15")
    plot = tmp_path / "open_set.png"
    out = run_cli(
        "bench", "--open-set", "--plot", str(plot), "--json",
        env={"FRUITSTREAM_DATASET_DIR": str(root)}, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    r = json.loads(text[: text.rindex("}") + 1])
    with np.load(default_bundle_dir() / ANCHORS_FILE) as z:
        named = "labels" in z.files
    assert set(r["scores"]) == (set(SCORES) if named else {"top-fruit", "not-none", "energy"})
    assert r["sets"]["not_fruit"] == PER_FOLDER * 5
    for row in r["scores"].values():
        # The operating point was chosen on grocery/val and not-fruit/val, as training does.
        assert row["grocery_unknown"] <= 0.03 + 1e-9 or row["not_fruit_rejected"] >= 0.97
        rejected, unknown = row["curve"]
        assert rejected[0] == 0 and rejected[-1] >= 0.95 and len(unknown) == len(rejected)
        assert 0 <= row["wild_unknown_at_70"] <= 1
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_tta_bench_compares_views_with_the_photo_alone(dataset: Path, tmp_path: Path) -> None:
    root = _mini(dataset, tmp_path / "fruits15")
    out = run_cli(
        "bench", "--tta", "--json", env={"FRUITSTREAM_DATASET_DIR": str(root)}, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout)
    photo = r["sets"]["wild"]["photo"]
    assert set(r["sets"]["wild"]) >= {"photo", "+ mirror", "+ mirror + centre crop + padded"}
    assert 0 < photo["top1"] <= 1 and 0 <= photo["negatives_rejected"] <= 1
    # More views cost more time for one photo.
    ms = r["ms_per_photo"]
    assert ms["+ mirror + centre crop + padded"] > ms["photo"] > 0
