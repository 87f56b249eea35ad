"""Runs training from parsed arguments and evaluates the result on the held-out sets."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from fruitstream.bench import precision_comparison
from fruitstream.core.classifier import Classifier
from fruitstream.core.evaluation import evaluate
from fruitstream.core.precision import cpu_features
from fruitstream.errors import ConfigError
from fruitstream.heldout import REPORTED
from fruitstream.model.bundle import ModelBundle
from fruitstream.training.config import TrainConfig, log
from fruitstream.training.train import train

# The figures kept for the card and the bundle (`confusion` draws the card's wild/val matrix).
KEPT = (
    "n", "failed", "accuracy", "top3", "balanced_accuracy", "rejection_rate", "ece",
    "per_class", "confusion_pairs", "mistakes", "not_fruit", "confusion",
)  # fmt: skip


def evaluate_held_out(bundle: ModelBundle, data_dir: Path, speed: bool = True) -> dict[str, Any]:
    """The figures that go into the bundle and its model card, for every graph it ships (with
    ``speed``, the two graphs timed against each other too)."""
    metrics: dict[str, Any] = {}
    precisions = [bundle.precision] + [p for p in ("fp32",) if p != bundle.precision]
    for precision in precisions:
        clf = Classifier(bundle.with_precision(precision))
        out: dict[str, Any] = {}
        for held in REPORTED:
            name, root = held.metric, held.path(data_dir)
            if not root.is_dir():
                continue
            negatives = data_dir / held.negatives if held.negatives else None
            neg = negatives if negatives is not None and negatives.is_dir() else None
            report = _evaluate_subset(clf, root, bundle.labels, neg)
            if not report:
                continue
            out[name] = {k: report[k] for k in KEPT if k in report}
            log(f"   {precision} {name}: {_summary(out[name])}")
        if precision == bundle.precision:
            metrics.update(out)
        else:
            metrics[precision] = out
    metrics["open_set"] = open_set_study(bundle, data_dir)
    metrics["measured_on"] = cpu_features().describe()
    if speed and bundle.has_precision("int8"):
        timed = precision_comparison(bundle, rounds=3)
        metrics["speed"] = {
            p: {k: round(v, 2) for k, v in timed[p].items() if k != "model_bytes"}
            for p in ("int8", "fp32")
        }
    return metrics


def open_set_study(bundle: ModelBundle, data_dir: Path) -> dict[str, Any]:
    """``bench --open-set`` on the bundle: its table for the card (curves left out of
    bundle.json) and its trade-off figure beside the graphs."""
    from fruitstream.bench.openset import open_set_benchmark, plot_open_set
    from fruitstream.training.figures import OPEN_SET_FILE

    study = open_set_benchmark(bundle, data_dir)
    plot_open_set(study, bundle.path / OPEN_SET_FILE)
    for row in study["scores"].values():
        row.pop("curve")
    log(f"   open-set scores measured; figure {bundle.path / OPEN_SET_FILE}")
    return study


def redraw(path: Path, data_dir: Path, previous: Path | None = None) -> ModelBundle:
    """``train --plot``: a trained bundle measured again on the held-out sets (its open-set
    study included) and its card and figures (training curves, wild/val confusion matrix,
    open-set trade-off) drawn again; with ``previous``, the card compares it with that
    bundle's figures (else with the ones it already compared with, if any)."""
    from dataclasses import replace

    from fruitstream.training.card import previous_figures, write_card

    bundle = ModelBundle.load(path)
    metrics = {
        "calibration": bundle.metrics.get("calibration", {}),
        **evaluate_held_out(bundle, data_dir, speed="speed" not in bundle.metrics),
    }
    # Speed stays as measured at training (on an idle machine); figures of accuracy are
    # deterministic and measured again.
    for kept in ("speed", "previous"):
        if kept in bundle.metrics:
            metrics[kept] = bundle.metrics[kept]
    if previous is not None:
        before = previous_figures(previous)
        if before is None:
            raise ConfigError(f"no model bundle with figures at {previous}")
        metrics["previous"] = before
    bundle = replace(bundle, metrics=metrics)
    bundle.save_metadata()
    write_card(bundle)
    return bundle


def _summary(r: dict[str, Any]) -> str:
    parts = []
    if "accuracy" in r:
        parts.append(f"top-1 {r['accuracy']:.4f} rejected {r['rejection_rate']:.4f}")
    if "not_fruit" in r:
        parts.append(f"negatives rejected {r['not_fruit']['rejection_rate']:.4f}")
    return ", ".join(parts)


def _evaluate_subset(
    clf: Classifier, root: Path, labels: tuple[str, ...], negatives: Path | None
) -> dict[str, Any]:
    """Only the classes this model knows (a subset run has fewer folders); {} when none."""
    present = [p.name for p in root.iterdir() if p.is_dir()]
    if set(present) <= set(labels):
        return evaluate(clf, root, negatives)
    if not set(present) & set(labels) and negatives is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in set(present) & set(labels):
            (Path(tmp) / name).symlink_to((root / name).resolve())
        return evaluate(clf, Path(tmp), negatives)


def run_training(args: argparse.Namespace) -> ModelBundle | None:
    """Train and evaluate a bundle; with ``--contact-sheet``, only draw generated scenes."""
    classes = (
        tuple(c.strip() for c in args.classes.split(",")) if args.classes else TrainConfig.classes
    )
    data = Path(args.data)
    if args.plot:
        return redraw(Path(args.plot), data, Path(args.previous) if args.previous else None)
    if args.requantize:
        from fruitstream.training.train import requantize

        return requantize(
            Path(args.requantize),
            data,
            interpolation=args.interpolation,
            int8_weights=args.int8_weights,
            bias_correction=args.int8_bias_correction,
            version=args.version,
            on_eval=None if args.no_eval else lambda bundle: evaluate_held_out(bundle, data),
        )
    cfg = TrainConfig(
        data_dir=data,
        out_dir=Path(args.out),
        classes=classes,
        backbone=args.backbone,
        input_size=args.size,
        interpolation=args.interpolation,
        max_per_class=args.max_per_class,
        real_views=args.real_views,
        scenes_per_class=args.scenes_per_class,
        negative_scenes=args.negative_scenes,
        field=not args.no_field,
        field_crops=args.field_crops,
        field_whole=not args.field_crops_only,
        field_per_fruit=args.field_per_fruit,
        field_weight=args.field_weight,
        known_rule=args.known_rule,
        head_steps=args.steps,
        finetune_epochs=args.finetune_epochs,
        split_block=args.split_block,
        quantize=not args.no_int8,
        int8_weights=args.int8_weights,
        int8_bias_correction=args.int8_bias_correction,
        seed=args.seed,
        version=args.version or TrainConfig.version,
        cache_dir=None if args.no_cache else TrainConfig.cache_dir,
        evaluate=not args.no_eval,
    )
    if args.contact_sheet:
        from fruitstream.training.data import scene_contact_sheet

        sheet = scene_contact_sheet(cfg, Path(args.contact_sheet))
        log(f"contact sheet of generated scenes written to {sheet}")
        return None
    return train(cfg, on_eval=lambda bundle: evaluate_held_out(bundle, data))
