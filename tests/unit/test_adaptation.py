"""Adapting the last layer (core.adaptation): plans, the fit, the anchors, heads as bytes."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest

from fruitstream.core.adaptation import (
    VIEW_BUDGET,
    VIEW_TARGET,
    PhotoSet,
    fit,
    plan,
    scores,
    views_per_photo,
    views_wanted,
)
from fruitstream.core.imaging import TEACHING_VIEWS
from fruitstream.domain import MIN_NEW_CLASS_PHOTOS, NOT_FRUIT
from fruitstream.errors import ModelError
from fruitstream.model.head import Head, known_mask, unit

LABELS = ("apple", "banana", "orange")
WIDTH = 8


def _base() -> Head:
    """Each fruit read from its own dimension; dimensions 3+ are "none of these"."""
    weight = np.zeros((4, WIDTH), np.float32)
    for i in range(3):
        weight[i, i] = 2.0
    weight[3, 3:] = 2.0
    return Head(LABELS, weight, np.zeros(4, np.float32), known_threshold=0.5)


def _photos(dim: int, n: int, seed: int, other: int | None = None) -> np.ndarray:
    """``n`` photos lit up on ``dim`` (and half as much on ``other``), with a little noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.1, (n, WIDTH)).astype(np.float32)
    x[:, dim] += 3.0
    if other is not None:
        x[:, other] += 1.5
    return x


def test_a_plan_makes_a_new_fruit_from_five_photos_and_keeps_the_rest_waiting() -> None:
    names = ["mango"] * MIN_NEW_CLASS_PHOTOS + ["kiwi"] * 2 + ["apple", NOT_FRUIT]
    p = plan(LABELS, names)
    assert p.labels == (*LABELS, "mango")
    assert p.waiting == {"kiwi": 2}
    assert list(p.targets) == [3] * 5 + [-1, -1, 0, 4]  # not-fruit: the last row


def test_the_fit_learns_what_people_corrected_and_keeps_the_rest() -> None:
    # Bananas that look like apples (dim 0) with a trace on dim 5: the base calls them apple.
    base = _base()
    corrected = _photos(0, 12, seed=1, other=5)
    corrected[:, 0] -= 1.0
    apples = _photos(0, 30, seed=2)
    before = scores(base, PhotoSet(corrected, ("banana",) * 12))
    assert before["top1"] == 0.0
    head, p = fit(base, corrected, ["banana"] * 12, anchors=apples)
    assert p.labels == LABELS
    fresh = _photos(0, 20, seed=3, other=5)
    fresh[:, 0] -= 1.0
    assert scores(head, PhotoSet(fresh, ("banana",) * 20))["top1"] >= 0.9
    # Apples, which no label spoke of, are still apples: the anchors hold them.
    assert scores(head, PhotoSet(_photos(0, 20, seed=4), ("apple",) * 20))["top1"] == 1.0


def test_a_few_labelled_photos_teach_with_their_views_and_many_need_none() -> None:
    assert views_per_photo(3) == views_per_photo(10) == len(TEACHING_VIEWS)
    assert views_per_photo(40) == 4 and views_per_photo(VIEW_TARGET) == 0
    assert views_per_photo(0) == 0 and views_per_photo(5000) == 0
    assert views_wanted(["mango"] * 10 + [NOT_FRUIT] * 95) == [18] * 10 + [1] * 95
    # Many small classes: the same share for each, never more than the budget in all.
    many = [f"fruit-{i // 5}" for i in range(1000)]
    wanted = views_wanted(many)
    assert sum(wanted) <= VIEW_BUDGET and len(set(wanted)) == 1 and wanted[0] > 0


def test_the_refit_learns_what_a_photos_views_show() -> None:
    # Three corrected bananas that look like apples but for a trace on dim 5; their views
    # show the trace on dim 6 instead, as the fresh bananas do. Only a fit that reads the
    # views tells those from apples.
    base = _base()
    corrected = _photos(0, 3, seed=1, other=5)
    views = []
    for i, photo in enumerate(corrected):
        v = np.repeat(photo[None], 6, axis=0) + np.random.default_rng(i).normal(0, 0.1, (6, WIDTH))
        v[:, 5] -= 1.5
        v[:, 6] += 1.5
        views.append(v.astype(np.float32))
    fresh = _photos(0, 20, seed=3, other=6)
    apples = _photos(0, 30, seed=2)
    plain, _ = fit(base, corrected, ["banana"] * 3, anchors=apples)
    taught, _ = fit(base, corrected, ["banana"] * 3, anchors=apples, views=views)
    measured = PhotoSet(fresh, ("banana",) * 20)
    without, with_views = scores(plain, measured)["top1"], scores(taught, measured)["top1"]
    assert with_views == 1.0 and without <= 0.7
    assert scores(taught, PhotoSet(_photos(0, 20, seed=4), ("apple",) * 20))["top1"] == 1.0
    # The vote remembers the photos themselves, not their views.
    assert taught.memory is not None and len(taught.memory) == 3


def test_a_new_fruit_is_answered_and_other_unknowns_stay_rejected() -> None:
    base = _base()
    mango = _photos(6, 8, seed=5)
    negatives = _photos(7, 40, seed=6)  # another kind the base rejects
    head, _ = fit(base, mango, ["mango"] * 8, anchors=negatives)
    assert head.labels[-1] == "mango"
    assert scores(head, PhotoSet(_photos(6, 20, seed=7), ("mango",) * 20))["recall_known"] == 1.0
    assert scores(head, PhotoSet(_photos(7, 20, seed=8), (NOT_FRUIT,) * 20))["rejected"] == 1.0


def test_not_fruit_labels_teach_the_reject_row() -> None:
    base = _base()
    # Photos lit on the banana dimension that people say are no fruit (a yellow toy).
    toys = _photos(1, 15, seed=9, other=7)
    head, _ = fit(base, toys, [NOT_FRUIT] * 15)
    fresh = _photos(1, 10, seed=10, other=7)
    assert scores(head, PhotoSet(fresh, (NOT_FRUIT,) * 10))["rejected"] >= 0.9


@pytest.mark.parametrize("method", ["prior", "prototypes", "mix"])
def test_a_head_survives_bytes(method: str) -> None:
    head, _ = fit(_base(), _photos(6, 6, seed=11), ["mango"] * 6, method=method)
    again = Head.from_bytes(head.to_bytes())
    x = _photos(6, 3, seed=12)
    assert again.labels == head.labels and again.method == method
    assert np.allclose(again.probs(x), head.probs(x))


def test_the_vote_picks_among_fruits_and_does_not_let_negatives_through() -> None:
    # Labelled apples and bananas; a negative as like (or unlike) both of them as can be.
    memory_photos = np.concatenate([_photos(0, 5, seed=13), _photos(1, 5, seed=14)])
    plain = _base()
    voted = replace(plain, memory=unit(memory_photos), memory_classes=np.array([0] * 5 + [1] * 5),
                    vote=4.0)  # fmt: skip
    negative = np.zeros((1, WIDTH), np.float32)
    negative[0, [0, 1, 4]] = [1.0, 1.0, 1.2]
    assert voted.probs(negative)[0, -1] >= plain.probs(negative)[0, -1] - 1e-3
    # A banana-like photo is pushed towards banana, away from both apple and "none of these".
    banana = _photos(1, 1, seed=15, other=0)
    banana[0, 1] -= 0.5
    assert voted.probs(banana)[0, 1] > plain.probs(banana)[0, 1]
    assert voted.probs(banana)[0, -1] < plain.probs(banana)[0, -1]
    # A head stored before the vote was centred reads back uncentred and answers as it did:
    # its vote raised every fruit over "none of these".
    old = replace(voted, centred_vote=False)
    stored = _without_meta_key(old.to_bytes(), "centred_vote")
    again = Head.from_bytes(stored)
    assert not again.centred_vote
    assert again.probs(negative)[0, -1] < plain.probs(negative)[0, -1] - 0.05


def _without_meta_key(data: bytes, key: str) -> bytes:
    """Stored head bytes as an older version wrote them, without ``key`` in their meta."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    meta = json.loads(str(arrays["meta"]))
    del meta[key]
    arrays["meta"] = np.array(json.dumps(meta))
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def test_the_reject_rule_keeps_a_photo_torn_between_two_fruits_and_turns_away_a_negative() -> None:
    probs = np.array(
        [
            [0.45, 0.45, 0.02, 0.02, 0.06],  # torn between two base fruits: a fruit all the same
            [0.30, 0.10, 0.05, 0.05, 0.50],  # most likely none of these
            [0.05, 0.05, 0.05, 0.45, 0.40],  # top fruit is the new one (index 3): its own rule
            [0.05, 0.05, 0.05, 0.55, 0.30],
        ],
        np.float32,
    )
    assert list(known_mask(probs, 4, 0.5)) == [False, False, False, True]
    assert list(known_mask(probs, 4, 0.5, reject_below=0.4, reject_rule_fruits=3)) == [
        True, False, False, True,
    ]  # fmt: skip


def test_an_adapted_head_calls_as_many_anchors_unknown_as_the_base() -> None:
    base = _base()
    # Anchors: photos of each fruit, some between two of them, and negatives.
    anchors = np.concatenate(
        [_photos(0, 20, seed=16), _photos(1, 20, seed=17, other=2), _photos(5, 15, seed=18),
         _photos(2, 10, seed=19, other=6)]
    )  # fmt: skip
    corrected = _photos(1, 10, seed=20, other=2)
    head, _ = fit(base, corrected, ["banana"] * 10, anchors=anchors)
    assert head.reject_below is not None and head.reject_rule_fruits == len(LABELS)
    unknown_base = int((~base.known(base.probs(anchors))).sum())
    unknown_head = int((~head.known(head.probs(anchors))).sum())
    assert abs(unknown_head - unknown_base) <= 1
    # Without anchors there is nothing to match: the top fruit's rule stays.
    assert fit(base, corrected, ["banana"] * 10)[0].reject_below is None


def test_the_known_rule_survives_bytes_and_old_heads_keep_theirs() -> None:
    anchors = np.concatenate([_photos(0, 10, seed=21), _photos(6, 10, seed=22)])
    head, _ = fit(_base(), _photos(0, 6, seed=23), ["apple"] * 6, anchors=anchors)
    again = Head.from_bytes(head.to_bytes())
    assert again.reject_below == head.reject_below
    assert again.reject_rule_fruits == head.reject_rule_fruits
    old = Head.from_bytes(
        _without_meta_key(_without_meta_key(head.to_bytes(), "reject_below"), "reject_rule_fruits")
    )
    assert old.reject_below is None
    probs = old.probs(anchors)
    assert list(old.known(probs)) == list(probs[:, :3].max(axis=1) >= old.known_threshold)


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="not a stored head"):
        Head.from_bytes(b"not an npz")
    with pytest.raises(ModelError, match="unknown method"):
        fit(_base(), _photos(0, 2, seed=0), ["apple"] * 2, method="magic")
    with pytest.raises(ModelError, match="needs 4 rows"):
        Head(LABELS, np.zeros((3, WIDTH), np.float32), np.zeros(3, np.float32), 0.5)
