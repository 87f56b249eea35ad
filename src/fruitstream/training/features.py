"""Step 2b: the feature cache: what the frozen blocks make of every view, computed once."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fruitstream.model.bundle import PreprocessConfig
from fruitstream.training import synth
from fruitstream.training.config import REAL, TrainConfig, log
from fruitstream.training.data import (
    FIELD_PREFIX,
    Source,
    SpriteBank,
    group_ids,
    training_views,
)


@dataclass
class FeatureSet:
    features: NDArray[np.float32]  # pooled backbone features
    targets: NDArray[np.int64]
    weights: NDArray[np.float32]
    groups: NDArray[np.int64]  # one id per source image: its views stay together
    kinds: NDArray[np.int64]  # STUDIO, REAL, OTHER or SCENE
    maps: NDArray[np.float16]  # activations entering ``split_block``
    teacher: NDArray[np.float16]  # the pretrained ImageNet classifier's logits

    @property
    def real(self) -> NDArray[np.bool_]:
        return self.kinds == REAL  # type: ignore[no-any-return]


def features_key(cfg: TrainConfig, sources: list[Source]) -> str:
    """What the cached features depend on: the frozen network, the views, the scenes."""
    return hashlib.sha256(
        json.dumps(
            [cfg.backbone, cfg.size, cfg.interpolation, cfg.real_views, cfg.seed, cfg.split]
            + [synth.VERSION]
            + [s.key() for s in sources]
        ).encode()
    ).hexdigest()[:16]


def view_weights(
    cfg: TrainConfig, sources: list[Source], kinds: NDArray[np.int64], groups: NDArray[np.int64]
) -> NDArray[np.float32]:
    """What each view weighs: a studio frame or scene 1, a real photo ``real_weight``, a field
    photo ``field_weight``. Worked out at every run, never read from the cache, so that a run
    that only changes a weight reuses the features."""
    field_groups = [
        g
        for src, g in zip(sources, group_ids(sources), strict=True)
        if src.photo.startswith(FIELD_PREFIX)
    ]
    weights = np.where(kinds == REAL, cfg.real_weight, 1.0)
    if cfg.field_weight is not None and field_groups:
        weights = np.where(np.isin(groups, field_groups), cfg.field_weight, weights)
    return weights.astype(np.float32)


def extract_features(
    cfg: TrainConfig,
    sources: list[Source],
    bank: SpriteBank,
    onnx_path: Path,
    pre: PreprocessConfig,
) -> tuple[FeatureSet, bool]:
    """What the frozen network makes of every view, computed batch by batch and cached; and
    whether it came from the cache of an earlier run."""
    import onnxruntime as ort

    cache = cfg.cache_dir / f"features-{features_key(cfg, sources)}.npz" if cfg.cache_dir else None
    if cache is not None and cache.exists():
        log(f"   features from cache {cache}")
        data = np.load(cache)
        fs = FeatureSet(**{k: data[k] for k in data.files})
        fs.weights = view_weights(cfg, sources, fs.kinds, fs.groups)
        return fs, True

    options = ort.SessionOptions()
    if cfg.threads:
        options.intra_op_num_threads = cfg.threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feats: list[NDArray[np.float32]] = []
    maps: list[NDArray[np.float16]] = []
    teacher: list[NDArray[np.float16]] = []
    meta: list[tuple[int, int, int]] = []
    batch: list[NDArray[np.uint8]] = []

    def flush() -> None:
        out = session.run(None, {"input": np.stack(batch)})
        feats.append(out[0].astype(np.float32))
        maps.append(out[1].astype(np.float16))
        teacher.append(out[2].astype(np.float16))
        batch.clear()

    started = time.perf_counter()
    for tensor, src, group in training_views(sources, bank, cfg, pre):
        batch.append(tensor)
        meta.append((src.target, src.kind, group))
        if len(batch) == cfg.batch_size:
            flush()
        if len(meta) % 2000 == 0:
            log(f"   {len(meta)} views ({time.perf_counter() - started:.0f} s)")
    if batch:
        flush()
    log(f"   {len(meta)} views of {len(sources)} images in {time.perf_counter() - started:.0f} s")
    kinds = np.asarray([k for _, k, _ in meta], dtype=np.int64)
    groups = np.asarray([g for _, _, g in meta], dtype=np.int64)
    fs = FeatureSet(
        features=np.concatenate(feats),
        targets=np.asarray([t for t, _, _ in meta], dtype=np.int64),
        weights=view_weights(cfg, sources, kinds, groups),
        groups=groups,
        kinds=kinds,
        maps=np.concatenate(maps),
        teacher=np.concatenate(teacher),
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **asdict(fs))
    return fs, False
