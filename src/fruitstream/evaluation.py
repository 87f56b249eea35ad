"""Accuracy, per-class accuracy, confusion matrix and rejection rates of a classifier on folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fruitstream.classifier import Classifier, Prediction
from fruitstream.dataset import NOT_FRUIT_DIRS, image_files, labelled_images
from fruitstream.errors import ConfigError


def _classify_files(
    clf: Classifier, paths: list[Path], progress: Callable[[int], None] | None
) -> list[Prediction | None]:
    out: list[Prediction | None] = []
    step = clf.batch_size
    for start in range(0, len(paths), step):
        chunk = paths[start : start + step]
        for outcome in clf.classify_many([p.read_bytes() for p in chunk], top_k=1):
            out.append(outcome if isinstance(outcome, Prediction) else None)
        if progress:
            progress(len(chunk))
    return out


def find_not_fruit_dir(root: Path) -> Path | None:
    for name in NOT_FRUIT_DIRS:
        if (root / name).is_dir():
            return root / name
    return None


def evaluate(
    clf: Classifier,
    root: Path,
    not_fruit: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate on ``root/<class>/`` folders and, optionally, a folder of not-fruit photos.

    ``root`` may itself be a flat folder of not-fruit photos (no class folders): then only the
    rejection rate is reported.
    """
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder")
    labels = list(clf.labels)
    class_dirs = [p.name for p in root.iterdir() if p.is_dir() and p.name not in NOT_FRUIT_DIRS]
    unknown = sorted(set(class_dirs) - set(labels))
    if unknown:
        raise ConfigError(f"folders that are not classes of this model: {', '.join(unknown)}")
    if not_fruit is None:
        not_fruit = find_not_fruit_dir(root)
    if not class_dirs and not_fruit is None:
        not_fruit = root  # a flat folder of not-fruit photos

    report: dict[str, Any] = {"model": f"{clf.bundle.name} v{clf.bundle.version}"}
    items = labelled_images(root, labels)
    if items:
        preds = _classify_files(clf, [p for p, _ in items], progress)
        index = {c: i for i, c in enumerate(labels)}
        confusion = [[0] * len(labels) for _ in labels]
        failed = 0
        known = 0
        for (_, truth), pred in zip(items, preds, strict=True):
            if pred is None:
                failed += 1
                continue
            confusion[index[truth]][index[pred.label]] += 1
            known += pred.known
        per_class = {}
        for c in labels:
            row = confusion[index[c]]
            if sum(row):
                per_class[c] = {"n": sum(row), "accuracy": row[index[c]] / sum(row)}
        correct = sum(confusion[i][i] for i in range(len(labels)))
        report.update(
            n=len(items),
            failed=failed,
            accuracy=correct / len(items),
            # Share of real fruit photos wrongly called "not one of the fruits".
            rejection_rate=1 - known / len(items),
            per_class=per_class,
            labels=labels,
            confusion=confusion,
        )
    if not_fruit is not None:
        paths = image_files(not_fruit)
        preds = _classify_files(clf, paths, progress)
        rejected = sum(1 for p in preds if p is not None and not p.known)
        report["not_fruit"] = {
            "n": len(paths),
            "failed": sum(1 for p in preds if p is None),
            "rejection_rate": rejected / len(paths) if paths else 0.0,
        }
    if not items and not_fruit is None:
        raise ConfigError(f"no images found under {root}")
    return report
