"""Field photos in training: which photo a file comes from, boxes, crops, one group per photo."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from fruitstream.model.bundle import PreprocessConfig
from fruitstream.training.config import REAL, STUDIO, TrainConfig
from fruitstream.training.data import (
    Source,
    box_crops,
    field_photo,
    field_sources,
    group_ids,
    read_boxes,
    training_views,
)
from fruitstream.training.features import extract_features, features_key, view_weights


def test_field_photo_names_the_source_photo_of_tiles_and_copies() -> None:
    assert field_photo(Path("lathort-DSC_1042_17kv1r16k_5.jpg")) == "lathort-DSC_1042_17kv1r16k"
    assert field_photo(Path("lathort-DSC_1042_17kv1r16k_8.jpg")) == "lathort-DSC_1042_17kv1r16k"
    assert field_photo(Path("iagi-IMG_20210924_122302648-81782b3d.jpg")) == (
        "iagi-IMG_20210924_122302648"
    )


def test_read_boxes_turns_yolo_centres_into_corners_and_skips_bad_lines(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("0 0.5 0.5 0.2 0.4\nnot a box\n0 0.1 0.2 0.1 0.1\n")
    boxes = read_boxes(f)
    assert np.allclose(boxes, [(0.4, 0.3, 0.6, 0.7), (0.05, 0.15, 0.15, 0.25)])
    assert read_boxes(tmp_path / "missing.txt") == []


def test_box_crops_hold_a_fruit_and_stay_inside_the_photo() -> None:
    rng = random.Random(0)
    boxes = [(0.05, 0.05, 0.12, 0.12), (0.8, 0.8, 0.9, 0.9), (0.4, 0.45, 0.5, 0.55)]
    crops = box_crops(boxes, 200, rng)
    assert len(crops) == 200
    for x0, y0, x1, y1 in crops:
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        assert abs((x1 - x0) - (y1 - y0)) < 1e-9  # square on a square tile
        assert x1 - x0 >= 0.2 - 1e-9
        # at least one whole fruit inside every crop
        assert any(x0 <= a and y0 <= b and c <= x1 and d <= y1 for a, b, c, d in boxes)
    assert box_crops([], 3, rng) == []


def _field_dataset(root: Path) -> None:
    for cls, names in {
        "apple": ["lathort-P1_1.jpg", "lathort-P1_2.jpg", "lathort-P2_1.jpg"],
        "grape": ["iagi-G1-aaaa.jpg", "iagi-G1-bbbb.jpg", "iagi-G2-cccc.jpg"],
    }.items():
        (root / "field/train" / cls).mkdir(parents=True)
        (root / "field/boxes" / cls).mkdir(parents=True)
        for i, name in enumerate(names):
            Image.new("RGB", (64, 64), (40 * i, 120, 30)).save(root / "field/train" / cls / name)
            if cls == "apple":
                (root / "field/boxes" / cls / name.replace(".jpg", ".txt")).write_text(
                    "0 0.5 0.5 0.25 0.25\n"
                )


def test_every_tile_crop_and_copy_of_one_photo_is_one_group(tmp_path: Path) -> None:
    _field_dataset(tmp_path)
    cfg = TrainConfig(data_dir=tmp_path, field_crops=2, real_views=2, cache_dir=None)
    sources = field_sources(cfg, random.Random(0))
    # Apple tiles: whole + 2 crops each; grape copies: whole only (no boxes).
    assert len(sources) == 3 * 3 + 3
    assert all(s.kind == REAL for s in sources)
    assert sum(s.crop is not None for s in sources) == 6
    pre = PreprocessConfig(input_size=32)
    groups: dict[str, set[int]] = {}
    for pixels, src, group in training_views(sources, None, cfg, pre):  # type: ignore[arg-type]
        assert pixels.shape == (32, 32, 3)
        groups.setdefault(src.photo, set()).add(group)
    assert {p: len(g) for p, g in groups.items()} == {
        "field:apple:lathort-P1": 1,
        "field:apple:lathort-P2": 1,
        "field:grape:iagi-G1": 1,
        "field:grape:iagi-G2": 1,
    }
    assert len(set().union(*groups.values())) == 4


def test_no_field_leaves_the_field_photos_out(tmp_path: Path) -> None:
    _field_dataset(tmp_path)
    cfg = TrainConfig(data_dir=tmp_path, field=False, cache_dir=None)
    from fruitstream.training.data import training_sources

    (tmp_path / "studio/train/apple").mkdir(parents=True)
    for empty in ("grocery/train", "not-fruit/train"):
        (tmp_path / empty).mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(tmp_path / "studio/train/apple/a_1_100.jpg")
    kept = training_sources(cfg, {"apple": [tmp_path / "studio/train/apple/a_1_100.jpg"]})
    assert not any(s.photo.startswith("field:") for s in kept)
    with_field = training_sources(
        TrainConfig(data_dir=tmp_path, cache_dir=None),
        {"apple": [tmp_path / "studio/train/apple/a_1_100.jpg"]},
    )
    assert sum(s.photo.startswith("field:") for s in with_field) == 3 * 2 + 3
    # A dataset without field/ trains as before.
    import shutil

    shutil.rmtree(tmp_path / "field")
    assert (
        training_sources(
            TrainConfig(data_dir=tmp_path, cache_dir=None),
            {"apple": [tmp_path / "studio/train/apple/a_1_100.jpg"]},
        )
        == kept
    )


def test_field_photos_can_be_capped_per_fruit(tmp_path: Path) -> None:
    _field_dataset(tmp_path)
    every = field_sources(TrainConfig(data_dir=tmp_path, cache_dir=None), random.Random(0))
    capped = field_sources(
        TrainConfig(data_dir=tmp_path, field_per_fruit=1, cache_dir=None), random.Random(0)
    )
    photos = {s.photo for s in capped}
    assert len({s.photo for s in every}) == 4 and len(photos) == 2  # one photo of each fruit
    assert {p.split(":")[1] for p in photos} == {"apple", "grape"}
    assert all(s.photo in photos for s in capped)  # a photo kept keeps its crops


def test_field_views_weigh_field_weight_and_other_real_views_real_weight(tmp_path: Path) -> None:
    _field_dataset(tmp_path)
    cfg = TrainConfig(
        data_dir=tmp_path, real_views=2, real_weight=3.0, field_weight=0.5, cache_dir=None
    )
    grocery = tmp_path / "grocery/train/apple/g.jpg"
    grocery.parent.mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 20, 20)).save(grocery)
    sources = [Source(0, REAL, grocery), *field_sources(cfg, random.Random(0))]
    sources.append(Source(1, STUDIO, grocery))
    pre = PreprocessConfig(input_size=32)
    views = [(src, group) for _, src, group in training_views(sources, None, cfg, pre)]  # type: ignore[arg-type]
    kinds = np.asarray([s.kind for s, _ in views])
    groups = np.asarray([g for _, g in views])
    weights = view_weights(cfg, sources, kinds, groups)
    expected = [
        0.5 if s.photo.startswith("field:") else 3.0 if s.kind == REAL else 1.0 for s, _ in views
    ]
    assert weights.tolist() == expected
    assert weights[:2].tolist() == [3.0, 3.0] and weights[-1] == 1.0  # grocery's views; studio
    # Without a field weight, a field photo weighs as any real photo.
    same = view_weights(replace(cfg, field_weight=None), sources, kinds, groups)
    assert same.tolist() == [3.0 if s.kind == REAL else 1.0 for s, _ in views]


def test_cached_features_get_this_runs_weights(tmp_path: Path) -> None:
    # The cache keeps what the frozen blocks made of the views; a run that changes only a
    # weight reuses it, and must not train with the weights of the run that wrote it.
    _field_dataset(tmp_path)
    cfg = TrainConfig(data_dir=tmp_path, field_weight=0.5, cache_dir=tmp_path / "cache")
    sources = field_sources(cfg, random.Random(0))
    n = len(sources)
    stale = {
        "features": np.zeros((n, 4), np.float32),
        "targets": np.zeros(n, np.int64),
        "weights": np.full(n, 9.0, np.float32),
        "kinds": np.full(n, REAL, np.int64),
        "maps": np.zeros((n, 1), np.float16),
        "teacher": np.zeros((n, 1), np.float16),
    }
    stale["groups"] = np.asarray(group_ids(sources))
    (tmp_path / "cache").mkdir()
    np.savez(tmp_path / "cache" / f"features-{features_key(cfg, sources)}.npz", **stale)
    fs, cached = extract_features(cfg, sources, None, tmp_path / "none.onnx", PreprocessConfig())  # type: ignore[arg-type]
    assert cached
    assert fs.weights.tolist() == [0.5] * n


def test_crops_only_leaves_out_the_whole_photos_that_have_boxes(tmp_path: Path) -> None:
    _field_dataset(tmp_path)
    cfg = TrainConfig(data_dir=tmp_path, field_crops=2, field_whole=False, cache_dir=None)
    sources = field_sources(cfg, random.Random(0))
    apples = [s for s in sources if s.photo.startswith("field:apple:")]
    grapes = [s for s in sources if s.photo.startswith("field:grape:")]
    assert len(apples) == 3 * 2 and all(s.crop is not None for s in apples)
    assert len(grapes) == 3 and all(s.crop is None for s in grapes)  # no boxes: kept whole
