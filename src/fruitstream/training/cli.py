"""Runs training from parsed arguments and evaluates the result on the held-out sets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fruitstream.classifier import Classifier
from fruitstream.evaluation import evaluate
from fruitstream.model.bundle import ModelBundle
from fruitstream.training.train import FRUITS15, TrainConfig, log, train

HELD_OUT = {
    "studio_test": "studio/test",
    "grocery_val": "grocery/val",
    "not_fruit_val": "not-fruit/val",
}


def evaluate_held_out(bundle: ModelBundle, data_dir: Path) -> dict[str, Any]:
    """The figures that go into the bundle and its model card."""
    clf = Classifier(bundle)
    metrics: dict[str, Any] = {}
    for name, rel in HELD_OUT.items():
        root = data_dir / rel
        if not root.is_dir():
            continue
        if name == "not_fruit_val":
            nf = evaluate(clf, root)["not_fruit"]
            metrics[name] = {"n": nf["n"], "rejection_rate": nf["rejection_rate"]}
        else:
            # Only the classes this model knows (a subset run has fewer folders).
            report = _evaluate_subset(clf, root, bundle.labels)
            if report:
                metrics[name] = report
        log(f"   {name}: {metrics.get(name)}")
    return metrics


def _evaluate_subset(clf: Classifier, root: Path, labels: tuple[str, ...]) -> dict[str, Any]:
    import tempfile

    present = [p.name for p in root.iterdir() if p.is_dir()]
    if set(present) <= set(labels):
        r = evaluate(clf, root)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for name in set(present) & set(labels):
                (Path(tmp) / name).symlink_to(root / name)
            r = evaluate(clf, Path(tmp))
    if "accuracy" not in r:
        return {}
    return {"n": r["n"], "accuracy": r["accuracy"], "rejection_rate": r["rejection_rate"]}


def run_training(args: argparse.Namespace) -> ModelBundle:
    classes = tuple(c.strip() for c in args.classes.split(",")) if args.classes else FRUITS15
    data = Path(args.data)
    cfg = TrainConfig(
        data_dir=data,
        out_dir=Path(args.out),
        classes=classes,
        backbone=args.backbone,
        input_size=args.size,
        max_per_class=args.max_per_class,
        real_views=args.real_views,
        head_steps=args.steps,
        folds=args.folds,
        finetune_epochs=args.finetune_epochs,
        split_block=args.split_block,
        seed=args.seed,
        version=args.version,
        cache_dir=None if args.no_cache else Path("artifacts/cache"),
        evaluate=not args.no_eval,
    )
    return train(cfg, on_eval=lambda bundle: evaluate_held_out(bundle, data))
