"""``fruitstream train`` arguments, kept free of torch so that ``--help`` works without it.

Every default is ``TrainConfig``'s (``training.config``): written there once, read here.
"""

from __future__ import annotations

import argparse

from fruitstream.model.bundle import KNOWN_RULES, TRAINED_RESIZES
from fruitstream.training.config import BACKBONES, INT8_FORMATS, TrainConfig

DEFAULTS = TrainConfig()


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(DEFAULTS.data_dir), help="fruits15 folder")
    p.add_argument("--out", default=str(DEFAULTS.out_dir), help="where to write the model bundle")
    p.add_argument(
        "--classes",
        help=f"comma-separated subset of classes (default: all {len(DEFAULTS.classes)})",
    )
    p.add_argument(
        "--backbone",
        default=DEFAULTS.backbone,
        help=f"{', '.join(BACKBONES)} (default {DEFAULTS.backbone})",
    )
    p.add_argument("--size", type=int, help="input size in pixels (default: the backbone's own)")
    p.add_argument("--max-per-class", type=int, help="cap images per class and source")
    p.add_argument(
        "--real-views",
        type=int,
        default=DEFAULTS.real_views,
        help="augmented views per real photo",
    )
    p.add_argument(
        "--scenes-per-class",
        type=int,
        default=DEFAULTS.scenes_per_class,
        help=f"synthetic scenes per fruit (default {DEFAULTS.scenes_per_class})",
    )
    p.add_argument(
        "--negative-scenes",
        type=int,
        default=DEFAULTS.negative_scenes,
        help="synthetic scenes of other fruits, the 'none of these' class"
        f" (default {DEFAULTS.negative_scenes})",
    )
    p.add_argument(
        "--no-field", action="store_true", help="leave out the field/train photos (as before v4)"
    )
    p.add_argument(
        "--field-crops",
        type=int,
        default=DEFAULTS.field_crops,
        help="crops around the boxed fruit of each field photo with boxes"
        f" (default {DEFAULTS.field_crops})",
    )
    p.add_argument(
        "--field-crops-only",
        action="store_true",
        help="of a field photo with boxes, train on its crops only, not the whole photo",
    )
    p.add_argument(
        "--field-per-fruit",
        type=int,
        default=DEFAULTS.field_per_fruit,
        metavar="N",
        help="at most N field photos of a fruit, sampled (default: all)",
    )
    p.add_argument(
        "--field-weight",
        type=float,
        default=DEFAULTS.field_weight,
        metavar="W",
        help="a field photo's view weighs W studio frames (default: as any real photo)",
    )
    p.add_argument(
        "--known-rule",
        default=DEFAULTS.known_rule,
        choices=KNOWN_RULES,
        help="when a photo is one of the fruits: its 'none of these' probability is low enough"
        " (not-none, the default from v4) or its top fruit's is high enough (top-fruit)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=DEFAULTS.head_steps,
        help="optimizer steps of the linear head",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=DEFAULTS.finetune_epochs,
        help="epochs of fine-tuning (0: head only)",
    )
    p.add_argument(
        "--split-block",
        type=int,
        help="first backbone block fine-tuned (default: where the last stride-2 stage begins)",
    )
    p.add_argument(
        "--interpolation",
        default=DEFAULTS.interpolation,
        choices=TRAINED_RESIZES,
        help="the resize of every view, written into the bundle: box-bilinear (OpenCV, the"
        " default) or bilinear (Pillow, antialiased, as models before v3.1)",
    )
    p.add_argument("--no-int8", action="store_true", help="do not write the int8 graph")
    p.add_argument(
        "--int8-weights",
        default=DEFAULTS.int8_weights,
        choices=tuple(INT8_FORMATS),
        help="weights of the int8 graph: s7 (7-bit, the default: cannot saturate on CPUs"
        " without VNNI), s8 (8-bit, as models before v3.2) or u8 (unsigned, asymmetric)",
    )
    p.add_argument(
        "--int8-bias-correction",
        action="store_true",
        help="fold the mean weight-rounding error of each convolution into its bias first",
    )
    p.add_argument(
        "--requantize",
        metavar="BUNDLE",
        help="only write BUNDLE's int8 graph again with this recipe's int8 settings and"
        " --interpolation, calibrated on its training views, then re-evaluate it; the fp32"
        " weights stay as trained",
    )
    p.add_argument(
        "--plot",
        metavar="BUNDLE",
        help="only measure BUNDLE on the held-out sets again, open-set scores included, and"
        " rewrite its card and figures (training curves, wild/val confusion matrix, open-set"
        " trade-off)",
    )
    p.add_argument(
        "--previous",
        metavar="BUNDLE",
        help="with --plot: compare the card's figures with this earlier bundle's, per fruit",
    )
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument(
        "--version",
        help=f"model version written in the bundle (default {DEFAULTS.version}; --requantize:"
        " kept)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not cache features on disk")
    p.add_argument("--no-eval", action="store_true", help="skip evaluating on the held-out sets")
    p.add_argument(
        "--contact-sheet",
        metavar="PNG",
        help="only write a grid of generated training scenes to PNG, to check them by eye",
    )
