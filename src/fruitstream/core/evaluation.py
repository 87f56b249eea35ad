"""What a user needs to trust the model on a held-out set: top-1/top-3, per-class recall and
precision, balanced accuracy, confusion pairs, rejection of fruit and of negatives, and the
expected calibration error.

A set is ``<root>/<fruit>/...`` folders; its negatives (photos that are none of the fruits) sit
in ``<root>/not-fruit/``, in a sibling ``<root>-other/`` (the ``wild/val`` + ``wild/val-other``
layout), in a folder given explicitly, or ``<root>`` itself is a flat folder of negatives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruitstream.core.calibration import expected_calibration_error
from fruitstream.core.classifier import Classifier
from fruitstream.dataset import NOT_FRUIT_DIRS, image_files, labelled_images
from fruitstream.domain import Prediction
from fruitstream.errors import ConfigError


@dataclass(frozen=True)
class Answer:
    """The model's answer for one photo, as far as the metrics need it."""

    label: str
    known: bool
    confidence: float
    top: tuple[str, ...]  # best guesses first


def metrics(
    labels: Sequence[str],
    truths: Sequence[str],
    answers: Sequence[Answer | None],
    negatives: Sequence[Answer | None] = (),
    names: Sequence[str] = (),
    negative_names: Sequence[str] = (),
) -> dict[str, Any]:
    """The report of ``answers`` to fruit photos whose classes are ``truths``, and of
    ``negatives`` (answers to photos of none of the fruits). ``None`` is a photo that could not
    be read: it counts against top-1 and as not rejected. With ``names`` (file names in the
    same order), the report lists the mistakes, most confident first."""
    report: dict[str, Any] = {}
    if truths:
        index = {c: i for i, c in enumerate(labels)}
        confusion = [[0] * len(labels) for _ in labels]
        n = len(truths)
        top1 = top3 = rejected = 0
        conf, right = [], []
        for truth, ans in zip(truths, answers, strict=True):
            if ans is None:
                continue
            confusion[index[truth]][index[ans.label]] += 1
            top1 += ans.label == truth
            top3 += truth in ans.top[:3]
            rejected += not ans.known
            conf.append(ans.confidence)
            right.append(ans.label == truth)
        # "When the model says c" counts negatives it names c with known=true.
        said_known = {c: 0 for c in labels}
        for ans in negatives:
            if ans is not None and ans.known:
                said_known[ans.label] += 1
        per_class: dict[str, dict[str, Any]] = {}
        recalls: list[float] = []
        for c in labels:
            i = index[c]
            row_n = sum(1 for t in truths if t == c)
            said = sum(confusion[r][i] for r in range(len(labels))) + said_known[c]
            if row_n:
                recalls.append(confusion[i][i] / row_n)
            if row_n or said:
                per_class[c] = {
                    "n": row_n,
                    "recall": confusion[i][i] / row_n if row_n else None,
                    "precision": confusion[i][i] / said if said else None,
                }
        pairs = sorted(
            (
                (confusion[r][c], labels[r], labels[c])
                for r in range(len(labels))
                for c in range(len(labels))
                if r != c and confusion[r][c]
            ),
            key=lambda p: (-p[0], p[1], p[2]),
        )
        report.update(
            n=n,
            failed=sum(1 for a in answers if a is None),
            accuracy=top1 / n,
            top3=top3 / n,
            balanced_accuracy=sum(recalls) / len(recalls) if recalls else 0.0,
            # Share of the fruit photos wrongly called "not one of the fruits".
            rejection_rate=rejected / n,
            ece=expected_calibration_error(conf, right),
            per_class=per_class,
            confusion_pairs=[{"truth": t, "predicted": p, "n": k} for k, t, p in pairs],
            mistakes=_mistakes(names, truths, answers),
            labels=list(labels),
            confusion=confusion,
        )
    if negatives:
        called: dict[str, int] = {}  # the fruits negatives were named as, with known=true
        for ans in negatives:
            if ans is not None and ans.known:
                called[ans.label] = called.get(ans.label, 0) + 1
        report["not_fruit"] = {
            "n": len(negatives),
            "failed": sum(1 for a in negatives if a is None),
            "rejection_rate": sum(1 for a in negatives if a is not None and not a.known)
            / len(negatives),
            "called": dict(sorted(called.items(), key=lambda kv: (-kv[1], kv[0]))),
            "mistakes": _mistakes(negative_names, [""] * len(negatives), negatives),
        }
    return report


def _mistakes(
    names: Sequence[str], truths: Sequence[str], answers: Sequence[Answer | None], limit: int = 25
) -> list[dict[str, Any]]:
    """Wrong answers (a negative's wrong answer is any known fruit), most confident first."""
    wrong = sorted(
        (
            (a.confidence, name, truth, a.label)
            for name, truth, a in zip(names, truths, answers, strict=False)
            if a is not None and (a.label != truth if truth else a.known)
        ),
        key=lambda w: -w[0],
    )
    return [
        {"file": name, "truth": truth or None, "answer": label, "confidence": conf}
        for conf, name, truth, label in wrong[:limit]
    ]


def _answers(
    clf: Classifier, paths: list[Path], progress: Callable[[int], None] | None
) -> list[Answer | None]:
    out: list[Answer | None] = []
    step = 32
    for start in range(0, len(paths), step):
        chunk = paths[start : start + step]
        for outcome in clf.classify_many([p.read_bytes() for p in chunk], top_k=3):
            if isinstance(outcome, Prediction):
                top = tuple(t.label for t in outcome.top_k)
                out.append(Answer(outcome.label, outcome.known, outcome.confidence, top))
            else:
                out.append(None)
        if progress:
            progress(len(chunk))
    return out


def find_negatives_dir(root: Path) -> Path | None:
    """Where the negatives of the set at ``root`` are, if anywhere."""
    for name in NOT_FRUIT_DIRS:
        if (root / name).is_dir():
            return root / name
    sibling = root.with_name(root.name + "-other")
    return sibling if sibling.is_dir() else None


def evaluate(
    clf: Classifier,
    root: Path,
    negatives: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``clf`` on the set at ``root`` (see the module docstring for the layouts)."""
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder")
    labels = list(clf.labels)
    class_dirs = [p.name for p in root.iterdir() if p.is_dir() and p.name not in NOT_FRUIT_DIRS]
    unknown = sorted(set(class_dirs) - set(labels))
    if unknown:
        raise ConfigError(f"folders that are not classes of this model: {', '.join(unknown)}")
    if negatives is None:
        negatives = find_negatives_dir(root)
    if not class_dirs and negatives is None:
        negatives = root  # a flat folder of negatives
    items = labelled_images(root, labels)
    negative_paths = image_files(negatives) if negatives is not None else []
    if not items and not negative_paths:
        raise ConfigError(f"no images found under {root}")
    answers = _answers(clf, [p for p, _ in items], progress)
    negative_answers = _answers(clf, negative_paths, progress)
    report: dict[str, Any] = {
        "model": f"{clf.bundle.name} v{clf.bundle.version} ({clf.bundle.precision})",
        "graph_reason": clf.bundle.precision_reason,
    }
    report.update(
        metrics(
            labels,
            [c for _, c in items],
            answers,
            negative_answers,
            names=[str(p.relative_to(root)) for p, _ in items],
            negative_names=[p.name for p in negative_paths],
        )
    )
    return report


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def format_report(r: dict[str, Any]) -> Iterator[str]:
    """The lines `fruitstream evaluate` prints for a report of ``evaluate``."""
    yield f"model: {r['model']}"
    if r.get("graph_reason"):
        yield f"graph: {r['graph_reason']}"
    if "accuracy" in r:
        yield f"fruit photos: {r['n']} (failed to read: {r['failed']})"
        yield f"top-1: {r['accuracy']:.4f}   top-3: {r['top3']:.4f}"
        yield f"balanced accuracy (mean recall over fruits): {r['balanced_accuracy']:.4f}"
        yield f"fruit photos rejected (called unknown): {r['rejection_rate']:.4f}"
        yield f"expected calibration error: {r['ece']:.4f}"
        yield "per fruit:      recall  precision  photos"
        for label, pc in r["per_class"].items():
            if pc["n"]:
                yield f"  {label:<12} {_pct(pc['recall'])}  {_pct(pc['precision'])}   {pc['n']:5d}"
        pairs = r["confusion_pairs"][:10]
        if pairs:
            yield "most frequent confusions (truth -> answer):"
            for pair in pairs:
                yield f"  {pair['truth']:<12} -> {pair['predicted']:<12} {pair['n']}"
    if "not_fruit" in r:
        nf = r["not_fruit"]
        yield (
            f"negatives (none of the fruits): {nf['n']}, rejected (known=false):"
            f" {nf['rejection_rate']:.4f}"
        )
        if nf["called"]:
            named = ", ".join(f"{k} {v}" for k, v in list(nf["called"].items())[:8])
            yield f"  named as a fruit: {named}"


def gate_failures(
    report: dict[str, Any],
    min_accuracy: float | None = None,
    min_rejection: float | None = None,
    max_fruit_rejection: float | None = None,
    min_balanced_accuracy: float | None = None,
    min_class_recall: float | None = None,
) -> list[str]:
    """What a report misses of the given thresholds (the quality gate), one line each."""
    failures = []
    if min_accuracy is not None and report.get("accuracy", 0.0) < min_accuracy:
        failures.append(f"accuracy {report.get('accuracy', 0.0):.4f} < {min_accuracy}")
    if min_rejection is not None:
        rej = report.get("not_fruit", {}).get("rejection_rate", 0.0)
        if rej < min_rejection:
            failures.append(f"not-fruit rejection {rej:.4f} < {min_rejection}")
    if max_fruit_rejection is not None:
        rej = report.get("rejection_rate", 0.0)
        if rej > max_fruit_rejection:
            failures.append(f"fruit rejection {rej:.4f} > {max_fruit_rejection}")
    if min_balanced_accuracy is not None:
        bal = report.get("balanced_accuracy", 0.0)
        if bal < min_balanced_accuracy:
            failures.append(f"balanced accuracy {bal:.4f} < {min_balanced_accuracy}")
    if min_class_recall is not None:
        for label, pc in report.get("per_class", {}).items():
            if pc["recall"] is not None and pc["recall"] < min_class_recall:
                failures.append(f"{label} recall {pc['recall']:.4f} < {min_class_recall}")
    return failures
