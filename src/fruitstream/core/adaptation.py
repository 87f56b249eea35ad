"""Adapting the classifier's head to people's labels: pooled features in, a new head out (numpy).

A version made by ``adapt`` keeps the network and replaces only its last layer, the head that
maps the pooled features (the graphs' second output) to fruit probabilities. Two methods are
here, measured against each other by ``fruitstream bench --adapt``:

- ``prior``: the head refit on the labelled photos by gradient descent, with the base head as
  a Gaussian prior (an L2 pull towards its weights, and towards the class mean of the photos
  for a new fruit's row). Labels move the decision only where photos say it is wrong; far from
  them the base head still decides.
- ``prototypes``: the base head's logits plus a similarity vote: each photo's cosine similarity
  to the labelled photos of each class (the quick trial of the issue, as a baseline).
- ``mix``: ``prior`` plus that vote.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from fruitstream.core.imaging import TEACHING_VIEWS, Views
from fruitstream.domain import ADAPT_METHODS, MIN_NEW_CLASS_PHOTOS, NOT_FRUIT
from fruitstream.errors import ModelError
from fruitstream.model.head import Features, Head, softmax, unit

# How much the base's answers on its anchors weigh against the labels, and the L2 pull to the
# base weights: chosen by ``fruitstream bench --adapt`` (see docs/MODEL.md's figures).
ANCHOR_WEIGHT = 5.0
PRIOR_WEIGHT = 0.0005
STEPS = 300
# An anchor this close to a new fruit's photos (the percentile of their similarity to each
# other) may take that fruit's name.
NEW_FRUIT_PERCENTILE = 50
MIX_VOTE = 2.0
# A class's labelled photos and their teaching views (``TEACHING_VIEWS``) together: about this
# many examples for the refit. Ten photos of a fruit get every view; a fruit with hundreds of
# photos needs none, which keeps ``adapt`` on 1,000 labels under a minute.
VIEW_TARGET = 190
# Teaching views per ``adapt`` at most, whatever the number of labels: many small new classes
# must not make it slow (1,000 labels of docs/MODEL.md's run took 2,099).
VIEW_BUDGET = 2500


@dataclass(frozen=True)
class AdaptPlan:
    """Which labels a new head learns from, and which wait for more photos."""

    labels: tuple[str, ...]  # the new head's fruits: the base's, then new ones
    targets: NDArray[np.int64]  # one class index per labelled photo (-1: not used)
    waiting: dict[str, int]  # a new label -> how many photos it has, below the minimum


def plan(base_labels: Sequence[str], photo_labels: Sequence[str]) -> AdaptPlan:
    """Map each photo's label to a class: a base fruit, ``not-fruit`` (the last row), or a new
    fruit that has at least ``MIN_NEW_CLASS_PHOTOS`` photos."""
    counts = Counter(photo_labels)
    new = sorted(
        name for name, n in counts.items()
        if name not in base_labels and name != NOT_FRUIT and n >= MIN_NEW_CLASS_PHOTOS
    )  # fmt: skip
    labels = (*base_labels, *new)
    index = {name: i for i, name in enumerate(labels)}
    index[NOT_FRUIT] = len(labels)
    targets = np.array([index.get(name, -1) for name in photo_labels], dtype=np.int64)
    waiting = {
        name: n for name, n in counts.items()
        if name not in index and name != NOT_FRUIT
    }  # fmt: skip
    return AdaptPlan(labels, targets, waiting)


def views_per_photo(photos: int) -> int:
    """How many teaching views each of a class's ``photos`` labelled photos adds to the refit."""
    if photos <= 0:
        return 0
    return min(len(TEACHING_VIEWS), max(0, -(-VIEW_TARGET // photos) - 1))


def views_wanted(photo_labels: Sequence[str]) -> list[int]:
    """``views_per_photo`` of each labelled photo, by how many photos share its label, every
    label's cut in the same proportion when they would come to more than ``VIEW_BUDGET``."""
    counts = Counter(photo_labels)
    wanted = [views_per_photo(counts[name]) for name in photo_labels]
    total = sum(wanted)
    if total <= VIEW_BUDGET:
        return wanted
    return [n * VIEW_BUDGET // total for n in wanted]


def _grown(
    base: Head, labels: tuple[str, ...], features: Features, targets: NDArray[np.int64]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The base head with a row for each new fruit (before the reject row), started at the
    direction of its photos' mean feature scaled like the base rows."""
    n_new = len(labels) - len(base.labels)
    weight, bias = base.weight, base.bias
    if not n_new:
        return weight.copy(), bias.copy()
    scale = float(np.linalg.norm(weight[:-1], axis=1).mean())
    rows = []
    for c in range(len(base.labels), len(labels)):
        mean = features[targets == c].mean(axis=0)
        centred = mean - features[targets >= 0].mean(axis=0)
        rows.append(unit(centred[None])[0] * scale)
    new_w = np.concatenate([weight[:-1], np.stack(rows), weight[-1:]]).astype(np.float32)
    new_b = np.concatenate([bias[:-1], np.full(n_new, float(np.median(bias[:-1]))), bias[-1:]])
    return new_w, new_b.astype(np.float32)


def fit(
    base: Head,
    features: Features,
    photo_labels: Sequence[str],
    method: str = "mix",
    strength: float = 1.0,
    steps: int = 0,
    anchors: Features | None = None,
    views: Sequence[Features] | None = None,
) -> tuple[Head, AdaptPlan]:
    """A new head from labelled photos' pooled features (and, per photo, its teaching views'
    in ``views``, of which the refit takes the first ``views_wanted``); ``strength`` scales how
    far labels may pull it from the base (the prior's weight for ``prior``, the vote for
    ``prototypes``)."""
    if method not in ADAPT_METHODS:
        raise ModelError(f"unknown method {method!r}; choose one of {ADAPT_METHODS}")
    p = plan(base.labels, photo_labels)
    used = p.targets >= 0
    x = np.asarray(features, np.float32)[used]
    y = p.targets[used]
    # The refit also learns from each photo's teaching views; the vote, a new fruit's first
    # row and the reject rule read the photos themselves.
    fit_x, fit_y = x, y
    if views:
        wanted = views_wanted(photo_labels)
        extra = [
            np.asarray(v[:n], np.float32)
            for v, n, u in zip(views, wanted, used, strict=True) if u
        ]  # fmt: skip
        fit_x = np.concatenate([x, *extra])
        fit_y = np.concatenate([y, np.repeat(y, [len(v) for v in extra])])
    w0, b0 = _grown(base, p.labels, x, y)
    n_classes = len(p.labels) + 1
    anchored = _anchored(base, anchors)
    if method == "prototypes":
        head = replace(base, labels=p.labels, weight=w0, bias=b0, method=method)
        head = _with_vote(head, x, y, 4.0 * strength)
    elif not len(y):
        head = replace(base, labels=p.labels, weight=w0, bias=b0, method=method)
    else:
        w, b = _descend(
            base, w0, b0, fit_x, fit_y, n_classes, anchored, strength, steps or STEPS, x, y
        )
        head = replace(base, labels=p.labels, weight=w.astype(np.float32),
                       bias=b.astype(np.float32), method=method)  # fmt: skip
        if method == "mix":
            head = _with_vote(head, x, y, MIX_VOTE * strength)
    return _known_rule(head, base, anchored), p


@dataclass(frozen=True)
class _Anchors:
    """The anchors' features and the base's answers on them, worked out once per fit."""

    features: Features
    kept: NDArray[np.float32]  # n x (base fruits + 1)


def _anchored(base: Head, anchors: Features | None) -> _Anchors | None:
    if anchors is None or not len(anchors):
        return None
    a = np.asarray(anchors, np.float32)
    return _Anchors(a, base.probs(a))


def _known_rule(head: Head, base: Head, anchored: _Anchors | None) -> Head:
    """The version's "known" rule for the base's fruits: its "none of these" probability below
    the value that calls as many anchors unknown as the base does. At k = 10 the top-fruit rule
    called 7.2-8.7% of wild fruit unknown after adapting, this one 4.2-5.9%, with not-fruit/val
    and other-fruit/test rejected as often and wild/val-other 73.6-80.6% (``fruitstream bench
    --adapt``, seeds 0-4): the labels teach which fruit, and the top-fruit rule still turned
    away photos torn between two of them. Anchors are training photos, never the guard's sets.
    A new fruit, which the anchors do not show, keeps the top-fruit rule (the reject rule there
    let other-fruit/test lose 3 points after teaching papaya, or named it in fewer frames)."""
    if anchored is None:
        return head
    base_unknown = float((~base.known(anchored.kept)).mean())
    reject = head.probs(anchored.features)[:, -1]
    return replace(
        head, reject_below=float(np.quantile(reject, 1.0 - base_unknown)),
        reject_rule_fruits=len(base.labels),
    )  # fmt: skip


def _with_vote(head: Head, x: Features, y: NDArray[np.int64], vote: float) -> Head:
    """``head`` plus a similarity vote for the labelled fruit photos. The vote picks among
    fruits; "none of these" stays the head's to say: its row gets the vote's mean (a vote that
    only raised the fruits let 1.6-3.8 points more of not-fruit/val through, which the guard
    refuses), and the labelled not-fruit photos get no vote of their own (one called 7.6% of
    wild fruit unknown against 5.7%: ``fruitstream bench --adapt``)."""
    fruit = y < len(head.labels)
    return replace(head, memory=unit(x[fruit]), memory_classes=y[fruit], vote=vote)


def _descend(
    base: Head,
    w0: NDArray[np.float32],
    b0: NDArray[np.float32],
    x: Features,
    y: NDArray[np.int64],
    n_classes: int,
    anchored: _Anchors | None,
    strength: float,
    steps: int,
    photos_x: Features,
    photos_y: NDArray[np.int64],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Adam on: the labelled photos' cross-entropy (each class weighing the same whatever its
    number of photos) + on the anchors (photos like those the base was trained on), the base
    head's answers kept (KL, a new fruit counting as "none of these") + an L2 pull to the base
    weights. The anchors are what keeps grocery and studio photos answered as before: without
    them grocery/val lost 4 points at k = 5 (``fruitstream bench --adapt``). ``x`` may hold
    teaching views; the anchors a new fruit may take are matched to its photos, ``photos_x``."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float32)
    sample_w = (1.0 / np.maximum(counts, 1))[y]
    sample_w /= sample_w.sum()
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    n_base = len(base.labels)
    # On an anchor the base's "none of these" may become a new fruit: the new rows and the
    # reject row share the base's reject answer (taught papaya frames are among the anchors).
    spare = np.zeros(n_classes, bool)
    spare[n_base:] = True
    if anchored is not None:
        a, kept = anchored.features, anchored.kept
        anchor_w = ANCHOR_WEIGHT / strength / len(a)
        free = _like_new_fruit(a, photos_x, photos_y, n_base)
    lam = PRIOR_WEIGHT / strength
    w, b = w0.astype(np.float64), b0.astype(np.float64)
    m_w, v_w, m_b, v_b = (np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b))
    lr, beta1, beta2 = 0.01, 0.9, 0.999
    for t in range(1, steps + 1):
        g = (softmax(x @ w.T + b) - onehot) * sample_w[:, None]
        grad_w = g.T @ x + lam * (w - w0)
        grad_b = g.sum(axis=0) + lam * (b - b0)
        if anchored is not None:
            q = softmax(a @ w.T + b)
            target = np.zeros_like(q)
            target[:, :n_base] = kept[:, :n_base]
            target[:, -1] = kept[:, -1]
            rest = q[free][:, spare]
            share = rest / np.maximum(rest.sum(axis=1, keepdims=True), 1e-12)
            target[np.ix_(free, spare)] = kept[free, -1:] * share
            ga = (q - target) * anchor_w
            grad_w += ga.T @ a
            grad_b += ga.sum(axis=0)
        m_w = beta1 * m_w + (1 - beta1) * grad_w
        v_w = beta2 * v_w + (1 - beta2) * grad_w**2
        m_b = beta1 * m_b + (1 - beta1) * grad_b
        v_b = beta2 * v_b + (1 - beta2) * grad_b**2
        correction = float(np.sqrt(1 - beta2**t) / (1 - beta1**t))
        w -= lr * correction * m_w / (np.sqrt(v_w) + 1e-8)
        b -= lr * correction * m_b / (np.sqrt(v_b) + 1e-8)
    return w.astype(np.float32), b.astype(np.float32)


class Embedder(Protocol):
    """What ``embed`` needs of the classifier: the graphs' pooled features of photos."""

    @property
    def embed_width(self) -> int: ...

    def embed_views(
        self, images: Sequence[bytes], views: Views
    ) -> Sequence[NDArray[np.float32] | Exception]: ...


@dataclass(frozen=True)
class PhotoSet:
    """Embedded photos: features and, per photo, its fruit (``not-fruit`` for a negative) and
    the features of its teaching views (empty when they were not asked for)."""

    features: NDArray[np.float32]
    truths: tuple[str, ...]
    views: tuple[NDArray[np.float32], ...] = ()

    def take(self, index: Sequence[int]) -> PhotoSet:
        idx = np.asarray(index, dtype=np.int64)
        views = tuple(self.views[i] for i in idx) if self.views else ()
        return PhotoSet(self.features[idx], tuple(self.truths[i] for i in idx), views)


def embed(clf: Embedder, items: Sequence[tuple[Path, str]], views: Views = 0) -> PhotoSet:
    """Features of every readable photo (a photo that cannot be read is left out), with those
    of its first ``views`` teaching views (or of the views it names)."""
    vectors, truths, extra = [], [], []
    step = 64
    for start in range(0, len(items), step):
        chunk = items[start : start + step]
        for (_, truth), out in zip(
            chunk, clf.embed_views([p.read_bytes() for p, _ in chunk], views), strict=True
        ):
            if isinstance(out, np.ndarray):
                vectors.append(out[0])
                truths.append(truth)
                extra.append(out[1:])
    if not vectors:
        return PhotoSet(np.zeros((0, clf.embed_width), np.float32), ())
    return PhotoSet(np.stack(vectors), tuple(truths), tuple(extra) if views else ())


def scores(head: Head, photos: PhotoSet) -> dict[str, Any]:
    """Top-1 of the fruit photos, how many are called unknown, how many negatives are rejected."""
    probs = head.probs(photos.features)
    fruit = probs[:, : len(head.labels)]
    best = fruit.argmax(axis=1)
    known = head.known(probs)
    said = [head.labels[i] for i in best]
    is_fruit = np.array([t != NOT_FRUIT for t in photos.truths])
    right = np.array([s == t for s, t in zip(said, photos.truths, strict=True)])
    out: dict[str, Any] = {}
    if is_fruit.any():
        out["top1"] = float(right[is_fruit].mean())
        out["unknown"] = float((~known[is_fruit]).mean())
        per: dict[str, float] = {}
        for fruit_name in sorted({t for t in photos.truths if t != NOT_FRUIT}):
            mask = np.array([t == fruit_name for t in photos.truths])
            if mask.sum() >= 10:
                per[fruit_name] = float(right[mask].mean())
        out["per_fruit"] = per
        out["recall_known"] = float((right & known)[is_fruit].mean())
    if (~is_fruit).any():
        out["rejected"] = float((~known[~is_fruit]).mean())
    return out


def _like_new_fruit(
    anchors: Features, x: Features, y: NDArray[np.int64], n_base: int
) -> NDArray[np.bool_]:
    """The anchors that look like a new fruit's labelled photos (as close to one of them as
    those photos are to each other): there the base's "none of these" may become that fruit.
    Everywhere else an anchor keeps the base's answer, new fruits included (a papaya must not
    take over the apricots)."""
    free = np.zeros(len(anchors), bool)
    a = unit(anchors)
    for c in np.unique(y[y >= n_base]):
        own = unit(x[y == c])
        within = own @ own.T
        np.fill_diagonal(within, np.nan)
        threshold = float(np.nanpercentile(within, NEW_FRUIT_PERCENTILE)) if len(own) > 1 else 1.0
        free |= (a @ own.T).max(axis=1) >= threshold
    return free
