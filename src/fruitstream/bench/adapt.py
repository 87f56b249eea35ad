"""The adaptation benchmark: k labelled wild photos per fruit in, the rest of wild/ measured.

Wild photos play the part of a user's own photos, split into what is taught and what is
measured; the base model never saw any of them. Every draw is seeded, so the figures can be
rerun. The guard's held-out sets (studio/test, grocery/val, not-fruit/val, other-fruit/test)
say what adapting costs, and whether ``adapt`` would let the version go live.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fruitstream.core.adaptation import PhotoSet, embed, fit, scores
from fruitstream.core.classifier import Classifier
from fruitstream.core.imaging import TEACHING_VIEWS
from fruitstream.dataset import image_files, labelled_images
from fruitstream.domain import NOT_FRUIT
from fruitstream.errors import ConfigError
from fruitstream.heldout import (
    GROCERY_VAL,
    NOT_FRUIT_VAL,
    OTHER_FRUIT_TEST,
    STUDIO_TEST,
    WILD_VAL,
    WILD_VAL_OTHER,
)
from fruitstream.heldout import GUARDED as GUARDED_SETS
from fruitstream.model.bundle import ModelBundle
from fruitstream.model.head import Head
from fruitstream.service.versions import refusal

Report = dict[str, Any]
NEW_FRUIT = "papaya"
BASE_SETS = ("wild", "wild_other", "grocery", "studio", "not_fruit", "other_test")
# The guard's held-out sets (``heldout.GUARDED``), as ``adapt`` measures them: (set, figure).
# other-fruit/test is measured without the papaya it is taught here (``other_test``).
_KEYS = {OTHER_FRUIT_TEST.key: "other_test"}
GUARDED = tuple(
    (_KEYS.get(held.key, held.key), "top1" if held.fruit else "rejected") for held in GUARDED_SETS
)


def _sets(clf: Classifier, root: Path) -> dict[str, PhotoSet]:
    def negatives(folder: Path) -> list[tuple[Path, str]]:
        return [(p, NOT_FRUIT) for p in image_files(folder)]

    def new_fruit(folder: Path, wanted: bool) -> list[tuple[Path, str]]:
        return [
            (p, NEW_FRUIT if wanted else NOT_FRUIT)
            for p in image_files(folder)
            if p.name.startswith(NEW_FRUIT) == wanted
        ]

    labels = clf.labels
    # What may be taught carries every teaching view; each draw takes what ``adapt`` would.
    views = len(TEACHING_VIEWS)
    return {
        "wild": embed(clf, labelled_images(WILD_VAL.path(root), labels), views),
        "wild_other": embed(clf, negatives(WILD_VAL_OTHER.path(root)), views),
        "grocery": embed(clf, labelled_images(GROCERY_VAL.path(root), labels)),
        "studio": embed(clf, labelled_images(STUDIO_TEST.path(root), labels)),
        "not_fruit": embed(clf, negatives(NOT_FRUIT_VAL.path(root))),
        "papaya_train": embed(clf, new_fruit(root / "other-fruit" / "train", True), views),
        "papaya_test": embed(clf, new_fruit(OTHER_FRUIT_TEST.path(root), True)),
        "other_test": embed(clf, new_fruit(OTHER_FRUIT_TEST.path(root), False)),
    }


def _draw(photos: PhotoSet, per_class: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """``per_class`` photos of each class taught (all but one when a class has fewer), the
    rest measured."""
    taught: list[int] = []
    for name in sorted(set(photos.truths)):
        idx = [i for i, t in enumerate(photos.truths) if t == name]
        rng.shuffle(idx)
        taught += idx[: min(per_class, len(idx) - 1)]
    chosen = set(taught)
    return taught, [i for i in range(len(photos.truths)) if i not in chosen]


def adapt_benchmark(
    bundle: ModelBundle,
    root: Path,
    ks: Sequence[int] = (3, 5, 10),
    draws: int = 5,
    methods: Sequence[str] = ("prior", "prototypes"),
    seed: int = 0,
    sets: dict[str, PhotoSet] | None = None,
    anchors: NDArray[np.float32] | None = None,
) -> Report:
    if not WILD_VAL.path(root).is_dir():
        raise ConfigError(f"{root} has no {WILD_VAL.folder}: point --dataset at fruits15")
    clf = Classifier(bundle)
    started = time.perf_counter()
    sets = sets or _sets(clf, root)
    embed_seconds = time.perf_counter() - started
    base = bundle.base_head()
    shipped = bundle.anchors() if anchors is None else anchors
    report: Report = {
        "model": bundle.model_version,
        "draws": draws,
        "seed": seed,
        "embed_seconds": embed_seconds,
        "photos": {k: len(v.truths) for k, v in sets.items()},
        "base": {name: scores(base, sets[name]) for name in BASE_SETS},
        "methods": {},
    }
    for name in methods:
        # "prior:no-anchors": the same fit without the shipped anchors (what they are for).
        method, _, variant = name.partition(":")
        anchors = None if variant == "no-anchors" else shipped
        per_k: Report = {}
        for k in ks:
            runs: list[Report] = []
            for d in range(draws):
                rng = random.Random(seed * 1000 + k * 10 + d)
                taught_w, rest_w = _draw(sets["wild"], k, rng)
                taught_o, rest_o = _draw(sets["wild_other"], 3 * k, rng)
                taught = _joined(sets["wild"].take(taught_w), sets["wild_other"].take(taught_o))
                clock = time.perf_counter()
                head, _ = fit(
                    base, taught.features, list(taught.truths), method, anchors=anchors,
                    views=taught.views,
                )  # fmt: skip
                fit_s = time.perf_counter() - clock
                runs.append(
                    {
                        "fit_seconds": fit_s,
                        "wild": scores(head, sets["wild"].take(rest_w)),
                        "wild_other": scores(head, sets["wild_other"].take(rest_o)),
                        **_guarded(head, sets, report["base"]),
                    }
                )
            per_k[str(k)] = _medians(runs)
        # A new fruit from 10 frames, the other negatives still to be rejected.
        runs = []
        for d in range(draws):
            rng = random.Random(seed * 1000 + 7 + d)
            idx = list(range(len(sets["papaya_train"].truths)))
            rng.shuffle(idx)
            taught = sets["papaya_train"].take(idx[:10])
            head, _ = fit(
                base, taught.features, list(taught.truths), method, anchors=anchors,
                views=taught.views,
            )  # fmt: skip
            measured = _guarded(head, sets, report["base"])
            runs.append({"papaya_test": scores(head, sets["papaya_test"]), **measured})
        per_k["new_fruit"] = _medians(runs)
        report["methods"][name] = per_k
    return report


def _joined(a: PhotoSet, b: PhotoSet) -> PhotoSet:
    views = a.views + b.views
    whole = len(views) == len(a.truths) + len(b.truths)
    return PhotoSet(
        np.concatenate([a.features, b.features]), a.truths + b.truths, views if whole else ()
    )


def _guarded(head: Head, sets: dict[str, PhotoSet], base: Report) -> Report:
    """The guard's held-out sets measured, and ``guard``: 1 when ``adapt``'s rule finds no
    reason to refuse the version on any of them against the base (it would go live), else 0."""
    out: Report = {name: scores(head, sets[name]) for name, _ in GUARDED}
    lost = [refusal(name, base[name][figure], out[name][figure]) for name, figure in GUARDED]
    out["guard"] = 0.0 if any(lost) else 1.0
    return out


def _medians(runs: list[Report]) -> Report:
    """The median of every figure over the draws (nested dicts alike)."""
    first = runs[0]
    out: Report = {}
    for key, value in first.items():
        if isinstance(value, dict):
            out[key] = _medians([r[key] for r in runs if r.get(key)]) if value else {}
        else:
            out[key] = statistics.median(float(r[key]) for r in runs)
    if "guard" in first:  # how many draws the guard lets through, not a median
        out["guard"] = sum(float(r["guard"]) for r in runs)
    return out


def adapt_speed(bundle: ModelBundle, root: Path, n: int, tmp: Path) -> Report:
    """``Versions.adapt`` end to end on an embedded deployment with ``n`` labels: training
    photos (grocery/train, field/train, other-fruit/train as not-fruit) taught, then adapted
    with the guard's held-out sets already embedded (they are embedded once per model) and
    again with every cache cold."""
    from fruitstream.bootstrap import build_service
    from fruitstream.config import Settings

    settings = Settings(data_dir=tmp / "data", dataset_dir=root, model_dir=bundle.path)
    service = build_service(settings)
    items = labelled_images(root / "grocery" / "train", bundle.labels)
    items += labelled_images(root / "field" / "train", bundle.labels)
    items += [(p, NOT_FRUIT) for p in image_files(root / "other-fruit" / "train")]
    rng = random.Random(0)
    rng.shuffle(items)
    teach_dir = tmp / "teach"
    for i, (path, label) in enumerate(items[:n]):
        dest = teach_dir / label / f"{i:05d}{path.suffix}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
    service.teach(teach_dir)
    cache = settings.data_dir / "cache"
    clock = time.perf_counter()
    first = service.adapt(force=True)
    cold = time.perf_counter() - clock
    for f in cache.glob("labels-*.npz"):
        f.unlink()
    clock = time.perf_counter()
    second = service.adapt(force=True)
    warm_guard = time.perf_counter() - clock
    clock = time.perf_counter()
    service.adapt(force=True)
    all_warm = time.perf_counter() - clock
    service.stop()
    return {
        "labels": second.version.labels_used,
        "cold_seconds": cold,
        "guard_cached_seconds": warm_guard,
        "all_cached_seconds": all_warm,
        "first_version": first.version.version,
    }


def format_adapt_benchmark(r: Report) -> str:
    def pct(x: float | None) -> str:
        return "  -  " if x is None else f"{x * 100:5.1f}"

    lines = [
        f"model {r['model']}; {r['draws']} draws per k (seed {r['seed']}), medians;"
        f" photos embedded in {r['embed_seconds']:.1f} s: {r['photos']}",
        "base: wild/val top-1 {} unknown {}, wild/val-other rejected {}, grocery/val {},"
        " studio/test {}, not-fruit/val rejected {}, other-fruit/test rejected {}".format(
            pct(r["base"]["wild"]["top1"]),
            pct(r["base"]["wild"]["unknown"]),
            pct(r["base"]["wild_other"]["rejected"]),
            pct(r["base"]["grocery"]["top1"]),
            pct(r["base"]["studio"]["top1"]),
            pct(r["base"]["not_fruit"]["rejected"]),
            pct(r["base"]["other_test"]["rejected"]),
        ),
    ]
    for method, per_k in r["methods"].items():
        lines.append(f"method {method}:")
        lines.append(
            "   k  wild top-1  worst fruit  unknown  wild-other rej  grocery  studio"
            "  not-fruit rej  other-fruit rej  guard  fit s  worst"
        )
        for k, m in per_k.items():
            if k == "new_fruit":
                continue
            per_fruit = m["wild"]["per_fruit"]
            worst_name = min(per_fruit, key=per_fruit.get, default="-")
            worst = per_fruit.get(worst_name)
            lines.append(
                f"  {k:>2}     {pct(m['wild']['top1'])}       {pct(worst)}    "
                f"{pct(m['wild']['unknown'])}          {pct(m['wild_other']['rejected'])}"
                f"    {pct(m['grocery']['top1'])}   {pct(m['studio']['top1'])}"
                f"          {pct(m['not_fruit']['rejected'])}            "
                f"{pct(m['other_test']['rejected'])}    {m['guard']:.0f}/{r['draws']}"
                f"  {m['fit_seconds']:5.2f}  {worst_name}"
            )
        nf = per_k["new_fruit"]
        lines.append(
            f"  new fruit ({NEW_FRUIT}, 10 frames):"
            f" recall {pct(nf['papaya_test']['recall_known'])},"
            f" other-fruit/test rejected {pct(nf['other_test']['rejected'])},"
            f" grocery {pct(nf['grocery']['top1'])}, studio {pct(nf['studio']['top1'])},"
            f" not-fruit/val rejected {pct(nf['not_fruit']['rejected'])};"
            f" the guard passed {nf['guard']:.0f} of {r['draws']} draws"
        )
    speed = r.get("speed")
    if speed:
        lines.append(
            f"adapt with {speed['labels']} labels (embedded deployment): "
            f"{speed['guard_cached_seconds']:.1f} s with the guard's sets already embedded,"
            f" {speed['cold_seconds']:.1f} s with every cache cold,"
            f" {speed['all_cached_seconds']:.1f} s with every photo already embedded"
        )
    return "\n".join(lines)
