"""Model versions: ``adapt`` from people's labels behind a guard, switch, and follow the live one.

An adapted version is the shipped graphs with a new last layer (``model.head.Head``). Its
head is kept in the object store (``models/<version>/head.npz``), its record and the live
version in the results database: every process that shares them (the app, the API, each
worker, the Spark executors) follows the live version within ``FOLLOW_SECONDS``, between two
photos, without a restart.

The guard: before a version goes live it is measured against the live one on the held-out
sets the bundle records and on a held-out fifth of the labels; a loss of more than
``MAX_LOSS`` on any of them keeps it, not activated, with the reason.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from fruitstream.core.adaptation import PhotoSet, embed, fit, scores, views_wanted
from fruitstream.dataset import image_files, labelled_images
from fruitstream.domain import ADAPT_METHODS, BASE_VERSION, NOT_FRUIT, Label, ModelVersion, utcnow
from fruitstream.errors import ConfigError, FruitstreamError, ModelError, NotFoundError
from fruitstream.heldout import GUARDED
from fruitstream.model.bundle import ModelBundle
from fruitstream.model.head import Head
from fruitstream.ports import LabelStore, ModelVersions, ObjectStore, PhotoClassifier

log = logging.getLogger(__name__)

# A version may lose at most this much (top-1, or share of negatives rejected) on any
# held-out set against the live one.
MAX_LOSS = 0.01
# How often a process asks the database which version is live.
FOLLOW_SECONDS = 1.0
# The held-out sets of the guard (``heldout.GUARDED``) are named by their folder.
LABELS_SET = "held-out labels"


class VersionDatabase(LabelStore, ModelVersions, Protocol):
    """What versions need of the results database."""


@dataclass
class AdaptReport:
    """What ``adapt`` made, and whether it went live."""

    version: ModelVersion
    active: bool
    waiting: dict[str, int] = field(default_factory=dict)  # new labels short of photos
    unreadable: int = 0  # labelled photos the store could not hand over


def held_out_fifth(label: Label) -> bool:
    """A fifth of the labels, the same ones every time (by content): what the guard measures."""
    return int(label.content_sha256[:8], 16) % 5 == 0


class Versions:
    """Adapt, list, switch and follow model versions over a database and an object store."""

    def __init__(
        self,
        db: VersionDatabase,
        store: ObjectStore,
        classifier: Callable[[], PhotoClassifier],
        dataset_dir: Path,
        cache_dir: Path,
    ) -> None:
        self.db = db
        self.store = store
        self._classifier = classifier
        self.dataset_dir = dataset_dir
        self.cache_dir = cache_dir
        self._checked = 0.0
        self._lock = threading.Lock()

    # --- following the live version -------------------------------------------------------

    def follow(self, clf: PhotoClassifier, force: bool = False) -> None:
        """Switch ``clf`` to the live version when it changed (at most one database read per
        ``FOLLOW_SECONDS``). A database or store that does not answer keeps the current one."""
        now = time.monotonic()
        if not force and now - self._checked < FOLLOW_SECONDS:
            return
        with self._lock:
            if not force and now - self._checked < FOLLOW_SECONDS:
                return
            self._checked = now
            try:
                live = self.db.active_version()
                if live != (clf.bundle.adapted or BASE_VERSION):
                    clf.use(self.bundle_of(live, clf.bundle))
                    log.info("now answering with model version %s", live)
            except FruitstreamError as exc:
                log.warning("kept model version %s: %s", clf.bundle.model_version, exc)

    def bundle_of(self, version: str, running: ModelBundle) -> ModelBundle:
        """The bundle of ``version`` over the graphs ``running`` uses."""
        if version == BASE_VERSION:
            return running.base
        found = {v.version: v for v in self.db.versions()}.get(version)
        if found is None:
            raise NotFoundError(f"no model version {version!r}")
        if found.base_model != running.base.model_version:
            raise ModelError(
                f"version {version} was adapted from {found.base_model}, this process runs "
                f"{running.base.model_version}"
            )
        return running.base.with_head(Head.from_bytes(self.store.get(found.head_key)), version)

    # --- listing and switching ------------------------------------------------------------

    def listing(self) -> tuple[list[ModelVersion], str]:
        """Every adapted version, newest first, and the live one's name."""
        return self.db.versions(), self.db.active_version()

    def activate(self, version: str) -> str:
        self.db.activate(version)
        self._checked = 0.0  # this process switches at its next photo, not a poll later
        return version

    def rollback(self) -> str:
        """Back to the live version's parent (the shipped model after the first)."""
        live = self.db.active_version()
        if live == BASE_VERSION:
            raise ConfigError("the shipped model is live: there is nothing to roll back to")
        parent = {v.version: v for v in self.db.versions()}[live].parent
        return self.activate(parent)

    # --- adapting -------------------------------------------------------------------------

    def adapt(self, method: str = "mix", force: bool = False) -> AdaptReport:
        """A new version from the live one's graphs and every current label, measured by the
        guard, live when it passes (or with ``force``)."""
        if method not in ADAPT_METHODS:
            raise ConfigError(
                f"unknown method {method!r}; choose one of {', '.join(ADAPT_METHODS)}"
            )
        started = time.perf_counter()
        clf = self._classifier()
        self.follow(clf, force=True)
        running = clf.bundle
        parent = running.adapted or BASE_VERSION
        labels = self.all_labels()
        if not labels:
            raise ConfigError("no labels yet: label photos first (fruitstream label / teach)")
        photos, usable, unreadable = self._label_features(clf, labels)
        if not usable:
            raise ConfigError("none of the labelled photos could be read from the store")
        base_head = running.base.base_head()
        anchors = running.base.anchors()
        held = np.array([held_out_fifth(lb) for lb in usable])
        # The guard measures a head fit without the held-out fifth; the version is fit on all.
        kept = photos.take(np.flatnonzero(~held).tolist())
        trial, _ = fit(
            base_head, kept.features, list(kept.truths), method, anchors=anchors, views=kept.views
        )
        head, plan = fit(
            base_head, photos.features, list(photos.truths), method, anchors=anchors,
            views=photos.views,
        )  # fmt: skip
        live_head = running.head or base_head
        figures, refused = self._guard(
            clf, live_head, head, trial, photos.take(np.flatnonzero(held).tolist())
        )
        version = ModelVersion(
            version=self._next_name(),
            parent=parent,
            base_model=running.base.model_version,
            labels_used=len(photos.truths),
            classes=head.labels,
            method=method,
            figures=figures,
            refused=tuple(refused),
            seconds=round(time.perf_counter() - started, 2),
            created_at=utcnow(),
        )
        self.store.put(version.head_key, head.to_bytes(), "application/octet-stream")
        self.db.add_version(version)
        active = force or not refused
        if active:
            self.db.activate(version.version)
            self.follow(clf, force=True)
        return AdaptReport(version, active, plan.waiting, unreadable)

    def _next_name(self) -> str:
        taken = {v.version for v in self.db.versions()}
        n = len(taken) + 1
        while f"a{n}" in taken:
            n += 1
        return f"a{n}"

    def all_labels(self) -> list[Label]:
        out: list[Label] = []
        before: str | None = None
        while True:
            page = self.db.labels(limit=500, before=before)
            out += page
            if len(page) < 500:
                return out
            before = page[-1].label_id

    def _label_features(
        self, clf: PhotoClassifier, labels: list[Label]
    ) -> tuple[PhotoSet, list[Label], int]:
        """The features of each labelled photo the store hands over, with its teaching views'
        (``views_wanted``), cached by content (a photo's bytes never change, view ``j`` of
        photo ``sha`` is ``sha/j``), and those labels in the same order."""
        cache = FeatureCache(self.cache_dir / f"labels-{_slug(clf.bundle.base.model_version)}.npz")
        keys = {
            lb: [lb.content_sha256, *(f"{lb.content_sha256}/{j}" for j in range(1, n + 1))]
            for lb, n in zip(labels, views_wanted([lb.label for lb in labels]), strict=True)
        }
        missing = [lb for lb in labels if not all(k in cache for k in keys[lb])]
        unreadable = 0
        for views in sorted({len(keys[lb]) - 1 for lb in missing}):
            group = [lb for lb in missing if len(keys[lb]) - 1 == views]
            for start in range(0, len(group), 64):
                unreadable += self._embed_into(cache, clf, group[start : start + 64], views, keys)
        cache.save()
        usable = [lb for lb in labels if lb.content_sha256 in cache]
        if not usable:
            return PhotoSet(np.zeros((0, clf.embed_width), np.float32), ()), [], unreadable
        features = np.stack([cache[lb.content_sha256] for lb in usable])
        # A photo embedded before whose views could not be made now teaches without them.
        no_views = np.zeros((0, clf.embed_width), np.float32)
        extra = tuple(
            np.stack([cache[k] for k in keys[lb][1:]])
            if len(keys[lb]) > 1 and all(k in cache for k in keys[lb])
            else no_views
            for lb in usable
        )
        return PhotoSet(features, tuple(lb.label for lb in usable), extra), usable, unreadable

    def _embed_into(
        self,
        cache: FeatureCache,
        clf: PhotoClassifier,
        chunk: list[Label],
        views: int,
        keys: dict[Label, list[str]],
    ) -> int:
        """Embeds ``chunk``'s photos with ``views`` teaching views each into ``cache``; how many
        could not be read."""
        blobs, keep, unreadable = [], [], 0
        for lb in chunk:
            try:
                blobs.append(self.store.get(lb.object_key))
                keep.append(lb)
            except FruitstreamError as exc:
                log.warning("label %s: photo %s unreadable: %s", lb.label_id, lb.object_key, exc)
                unreadable += 1
        for lb, rows in zip(keep, clf.embed_views(blobs, views), strict=True):
            if isinstance(rows, np.ndarray):
                for key, vec in zip(keys[lb], rows, strict=True):
                    cache[key] = vec
            else:
                unreadable += 1
        return unreadable

    def _guard(
        self, clf: PhotoClassifier, live: Head, head: Head, trial: Head, held_labels: PhotoSet
    ) -> tuple[dict[str, Any], list[str]]:
        """Figures of the live head and the new one on every held-out set; the reasons the new
        one may not go live."""
        figures: dict[str, Any] = {}
        refused: list[str] = []
        sets = self.guard_sets(clf)
        if sets is None:
            refused.append(
                f"the held-out sets are not under {self.dataset_dir} (set FRUITSTREAM_DATASET_DIR)"
            )
            sets = {}
        # A negative of a kind now taught (papaya frames once papaya is a fruit) counts as
        # that fruit, for the live version and the new one alike.
        sets = {name: expected(photos, head.labels) for name, photos in sets.items()}
        measured = [(name, photos, head) for name, photos in sets.items()]
        if len(held_labels.truths):
            measured.append((LABELS_SET, held_labels, trial))
        for name, photos, new in measured:
            before, after = _figure(live, photos), _figure(new, photos)
            figures[name] = {"n": len(photos.truths), "live": before, "new": after}
            reason = refusal(name, before, after)
            if reason:
                refused.append(reason)
        return figures, refused

    def guard_sets(self, clf: PhotoClassifier) -> dict[str, PhotoSet] | None:
        """The held-out sets' features (cached per model: they are embedded once). A
        negative's truth is its kind, from its file name (``papaya_321_100.jpg``)."""
        root = self.dataset_dir
        if not all(held.path(root).is_dir() for held in GUARDED):
            return None
        path = self.cache_dir / f"guard-v2-{_slug(clf.bundle.base.model_version)}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                return {
                    name: PhotoSet(
                        z[f"{name}/features"], tuple(str(t) for t in z[f"{name}/truths"])
                    )
                    for name in (held.folder for held in GUARDED)
                }
        labels = clf.bundle.base.labels
        sets: dict[str, PhotoSet] = {}
        for held in GUARDED:
            folder = held.path(root)
            items = (
                labelled_images(folder, labels)
                if held.fruit
                else [(p, p.stem.split("_")[0].lower()) for p in image_files(folder)]
            )
            sets[held.folder] = embed(clf, items)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {}
        for name, photos in sets.items():
            arrays[f"{name}/features"] = photos.features
            arrays[f"{name}/truths"] = np.array(photos.truths)
        np.savez(path, **arrays)
        return sets


def refusal(name: str, before: float, after: float) -> str | None:
    """Why a version may not go live on the set ``name`` (its figure ``after`` against the live
    one's ``before``), or None when it lost at most ``MAX_LOSS`` there."""
    if after >= before - MAX_LOSS:
        return None
    return f"{name}: {after:.1%} against {before:.1%} live ({(after - before) * 100:+.1f} points)"


def _figure(head: Head, photos: PhotoSet) -> float:
    """Top-1 for fruit photos, the share rejected for negatives, both for a mix."""
    s = scores(head, photos)
    if "top1" in s and "rejected" in s:
        n_neg = sum(t == NOT_FRUIT for t in photos.truths)
        n = len(photos.truths)
        return float((s["top1"] * (n - n_neg) + s["rejected"] * n_neg) / n)
    return float(s.get("top1", s.get("rejected", 0.0)))


def expected(photos: PhotoSet, labels: Sequence[str]) -> PhotoSet:
    """What a head with ``labels`` should answer for each photo: its fruit when the photo's
    truth names one of them (``cantaloupe-1`` is a cantaloupe), else ``not-fruit``."""

    def answer(truth: str) -> str:
        for label in labels:
            if truth == label or truth.startswith(label + "-"):
                return label
        return NOT_FRUIT

    return PhotoSet(photos.features, tuple(answer(t) for t in photos.truths))


def _slug(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FeatureCache:
    """Features by photo content, in one ``.npz`` file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, NDArray[np.float32]] = {}
        self._dirty = False
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    for key, vec in zip(z["keys"], z["features"], strict=True):
                        self._data[str(key)] = vec
            except (OSError, ValueError, KeyError) as exc:
                log.warning("feature cache %s unreadable, starting afresh: %s", path, exc)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __getitem__(self, key: str) -> NDArray[np.float32]:
        return self._data[key]

    def __setitem__(self, key: str, vec: NDArray[np.float32]) -> None:
        self._data[key] = vec
        self._dirty = True

    def save(self) -> None:
        if not self._dirty or not self._data:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self._data)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys), features=np.stack([self._data[k] for k in keys]))
        tmp.replace(self.path)
        self._dirty = False
