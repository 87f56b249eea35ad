"""The unknown answer and test-time views, measured on the held-out sets.

``open_set_benchmark``: each score of ``core.openset`` with its operating point chosen the way
training chooses the shipped one, on held-out sets that are not wild/ (grocery/val fruit,
not-fruit/val negatives: at most 3% of fruit rejected, or 97% of negatives), then measured on
wild/val (fruit called unknown) against wild/val-other (rejected) and the other sets; plus
one point of each whole trade-off curve (fruit called unknown where 70% of wild/val-other is
rejected), which compares the scores whatever their thresholds.

``tta_benchmark``: the base model's answer averaged over views of the photo (mirror, centre
crop, padded square), against the photo alone, with the time each takes for one photo.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from fruitstream.core.adaptation import PhotoSet, embed
from fruitstream.core.classifier import Classifier
from fruitstream.core.openset import (
    Reference,
    fruit_rejected_at,
    open_set_scores,
    operating_point,
    tradeoff,
)
from fruitstream.dataset import image_files, labelled_images
from fruitstream.domain import NOT_FRUIT
from fruitstream.errors import ConfigError
from fruitstream.heldout import (
    BY_KEY,
    GROCERY_VAL,
    STUDIO_TEST,
    WILD_VAL,
    WILD_VAL_OTHER,
    HeldOutSet,
)
from fruitstream.model.bundle import ModelBundle
from fruitstream.model.head import Head, softmax

Report = dict[str, Any]
# The held-out sets measured, in the order of the report (``heldout.HELD_OUT``: their folders).
SETS = tuple(
    BY_KEY[key] for key in ("wild", "wild_other", "grocery", "studio", "not_fruit", "other_fruit")
)
# Each figure of a score's row: the share of a set under its threshold.
UNDER_THRESHOLD = {
    "wild_unknown": "wild",
    "wild_other_rejected": "wild_other",
    "not_fruit_rejected": "not_fruit",
    "other_fruit_rejected": "other_fruit",
    "grocery_unknown": "grocery",
    "studio_unknown": "studio",
}
MAX_FRUIT_REJECTION = 0.03
MIN_NEGATIVE_REJECTION = 0.97
CURVE_AT = 0.70  # wild/val-other rejected: the floor
# Test-time views: (name, teaching views averaged with the photo).
TTA = (
    ("photo", ()),
    ("+ mirror", ("mirror",)),
    ("+ centre crop", ("crop-80-0",)),
    ("+ padded", ("padded",)),
    ("+ mirror + padded", ("mirror", "padded")),
    ("+ mirror + centre crop + padded", ("mirror", "crop-80-0", "padded")),
)


def _items(root: Path, held: HeldOutSet, labels: tuple[str, ...]) -> list[tuple[Path, str]]:
    if held.fruit:
        return labelled_images(held.path(root), labels)
    return [(p, NOT_FRUIT) for p in image_files(held.path(root))]


def _reference(bundle: ModelBundle) -> Reference | None:
    features, fruits = bundle.anchors_with_fruits()
    if fruits is None:  # no anchors, or anchors written before they carried fruit names
        return None
    return Reference.fit(features, fruits, bundle.labels)


def open_set_benchmark(bundle: ModelBundle, root: Path) -> Report:
    """Every score on every held-out set, at its operating point, and its curve on wild/."""
    if not WILD_VAL.path(root).is_dir():
        raise ConfigError(f"no {WILD_VAL.folder} under {root}: set FRUITSTREAM_DATASET_DIR")
    clf = Classifier(bundle)
    head = bundle.head or bundle.base_head()
    reference = _reference(bundle)
    started = time.perf_counter()
    sets = {held.key: embed(clf, _items(root, held, bundle.labels)) for held in SETS}
    embed_seconds = time.perf_counter() - started
    scores = {key: open_set_scores(head, s.features, reference) for key, s in sets.items()}
    rows: dict[str, Report] = {}
    for name in scores["wild"]:
        threshold = operating_point(
            scores["grocery"][name], scores["not_fruit"][name],
            MAX_FRUIT_REJECTION, MIN_NEGATIVE_REJECTION,
        )  # fmt: skip
        rows[name] = {
            "threshold": threshold,
            **{
                figure: float((scores[key][name] < threshold).mean())
                for figure, key in UNDER_THRESHOLD.items()
            },
            f"wild_unknown_at_{round(CURVE_AT * 100)}": fruit_rejected_at(
                scores["wild"][name], scores["wild_other"][name], CURVE_AT
            ),
            "curve": [
                c.round(4).tolist()
                for c in tradeoff(scores["wild"][name], scores["wild_other"][name])
            ],
        }
    shipped = bundle.base.known_rule
    return {
        "model": f"{bundle.name} v{bundle.version} ({bundle.precision})",
        "shipped_score": shipped,
        "sets": {key: len(s.features) for key, s in sets.items()},
        "distance_scores": reference is not None,
        "embed_seconds": round(embed_seconds, 1),
        "scores": rows,
    }


def format_open_set_benchmark(r: Report) -> str:
    at = f"wild_unknown_at_{round(CURVE_AT * 100)}"
    lines = [
        f"open-set scores: {r['model']}; photos {r['sets']}",
        "operating point: grocery/val fruit and not-fruit/val (<= 3% of fruit rejected, or 97%"
        " of negatives); wild/ only measured",
        f"{'score':12} {'wild unknown':>12} {'wild-other':>10} {'not-fruit':>9}"
        f" {'other-fruit':>11} {'grocery unk':>11} {'studio unk':>10} | unknown @ 70% wild-other",
    ]
    for name, row in r["scores"].items():
        mark = " (shipped)" if name == r["shipped_score"] else ""
        lines.append(
            f"{name:12} {row['wild_unknown']:12.1%} {row['wild_other_rejected']:10.1%}"
            f" {row['not_fruit_rejected']:9.1%} {row['other_fruit_rejected']:11.1%}"
            f" {row['grocery_unknown']:11.1%} {row['studio_unknown']:10.1%} | {row[at]:.1%}{mark}"
        )
    if not r["distance_scores"]:
        lines.append("(mahalanobis and knn need anchors with fruit names: models from v4 on)")
    return "\n".join(lines)


def plot_open_set(r: Report, path: Path) -> Path:
    """The trade-off curve of every score: wild fruit called unknown against wild/val-other
    rejected, each score's operating point marked."""
    from fruitstream.figures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for name, row in r["scores"].items():
        rejected, unknown = row["curve"]
        shipped = name == r["shipped_score"]
        (line,) = ax.plot(np.asarray(rejected) * 100, np.asarray(unknown) * 100,
                          linewidth=2.2 if shipped else 1.2,
                          label=f"{name}{' (shipped)' if shipped else ''}")  # fmt: skip
        ax.plot(row["wild_other_rejected"] * 100, row["wild_unknown"] * 100, "o",
                color=line.get_color())  # fmt: skip
    ax.axvline(70, color="grey", linestyle=":", linewidth=1)
    ax.axhline(8, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="wild/val-other rejected (%)", ylabel="wild/val fruit called unknown (%)",
           xlim=(40, 100), ylim=(0, 60), title=r["model"])  # fmt: skip
    ax.legend(frameon=False, fontsize=8, title="dots: operating points", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tta_benchmark(bundle: ModelBundle, root: Path, timing_photos: int = 20) -> Report:
    """Top-1 and fruit called unknown with each set of test-time views, per held-out set, and
    the median time to classify one photo each way (views run as one batch)."""
    clf = Classifier(bundle)
    head = bundle.head or bundle.base_head()
    names = sorted({v for _, views in TTA for v in views})
    out: Report = {"model": f"{bundle.name} v{bundle.version} ({bundle.precision})", "sets": {}}
    wild_other = embed(clf, _items(root, WILD_VAL_OTHER, bundle.labels), names)
    for held in (WILD_VAL, GROCERY_VAL, STUDIO_TEST):
        photos = embed(clf, _items(root, held, bundle.labels), names)
        out["sets"][held.key] = {
            label: _tta_scores(head, photos, names, views, wild_other if held is WILD_VAL else None)
            for label, views in TTA
        }
    files = image_files(WILD_VAL.path(root))[:timing_photos]
    out["ms_per_photo"] = {label: _tta_ms(clf, files, views) for label, views in TTA}
    return out


def _averaged(head: Head, photos: PhotoSet, names: list[str], views: tuple[str, ...]) -> Any:
    rows = [photos.features] + [np.stack([v[names.index(n)] for v in photos.views]) for n in views]
    return np.mean([softmax(head.logits(x)) for x in rows], axis=0)


def _tta_scores(
    head: Head,
    photos: PhotoSet,
    names: list[str],
    views: tuple[str, ...],
    negatives: PhotoSet | None,
) -> Report:
    probs = _averaged(head, photos, names, views)
    fruit = probs[:, : len(head.labels)]
    said = [head.labels[i] for i in fruit.argmax(axis=1)]
    known = head.known(probs)
    row: Report = {
        "top1": float(np.mean([s == t for s, t in zip(said, photos.truths, strict=True)])),
        "unknown": float(1 - known.mean()),
    }
    if negatives is not None:
        row["negatives_rejected"] = float(
            1 - head.known(_averaged(head, negatives, names, views)).mean()
        )
    return row


def _tta_ms(clf: Classifier, files: list[Path], views: tuple[str, ...]) -> float:
    """Median wall time of one photo: decode, views, one batch through the graph, average."""
    times = []
    for path in files:
        data = path.read_bytes()
        started = time.perf_counter()
        clf.embed_views([data], views)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def format_tta_benchmark(r: Report) -> str:
    lines = [f"test-time views: {r['model']}", f"{'views':34} {'wild top-1':>10} {'unknown':>8}"
             f" {'wild-other rej':>14} {'grocery':>8} {'studio':>8} {'ms/photo':>9}"]  # fmt: skip
    for label, _ in TTA:
        w, g, s = (r["sets"][k][label] for k in ("wild", "grocery", "studio"))
        lines.append(
            f"{label:34} {w['top1']:10.1%} {w['unknown']:8.1%} {w['negatives_rejected']:14.1%}"
            f" {g['top1']:8.1%} {s['top1']:8.1%} {r['ms_per_photo'][label]:9.2f}"
        )
    return "\n".join(lines)
