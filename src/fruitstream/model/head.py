"""A model's last layer as data: pooled features in, fruit probabilities out (numpy only).

The shipped graphs give the pooled features as their second output; a version made by
``fruitstream adapt`` is the same network with another ``Head``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fruitstream.errors import ModelError
from fruitstream.model.bundle import NOT_NONE, TOP_FRUIT

Features = NDArray[np.float32]


def softmax(logits: NDArray[np.floating]) -> NDArray[np.float32]:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: NDArray[np.float32] = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


@dataclass(frozen=True)
class Head:
    """The last layer: ``softmax(features @ weight.T + bias)``, one row per fruit, the
    "none of these" row last. ``memory``/``memory_classes`` hold the labelled fruit photos'
    unit-length features for the similarity vote (empty for the ``prior`` method).
    ``centred_vote``: the "none of these" row gets the vote's mean over the fruits, so that the
    vote picks among fruits and does not by itself turn negatives into fruit (heads stored
    before it was added read back without it, and answer as they did).
    ``reject_below``: when set (adapted versions), a photo whose top fruit is one of the first
    ``reject_rule_fruits`` (the base's) is "known" when its "none of these" probability is below
    it, instead of when the top fruit's reaches ``known_threshold``."""

    labels: tuple[str, ...]
    weight: NDArray[np.float32]
    bias: NDArray[np.float32]
    known_threshold: float
    method: str = "base"
    memory: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    memory_classes: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    vote: float = 0.0
    centred_vote: bool = True
    reject_below: float | None = None
    reject_rule_fruits: int = 0

    def __post_init__(self) -> None:
        if self.weight.shape[0] != len(self.labels) + 1 or self.bias.shape != (
            len(self.labels) + 1,
        ):
            raise ModelError(
                f"a head of {len(self.labels)} fruits needs {len(self.labels) + 1} rows,"
                f" got weight {self.weight.shape} and bias {self.bias.shape}"
            )

    @property
    def width(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, features: Features) -> NDArray[np.float32]:
        z = features @ self.weight.T + self.bias
        if len(self.memory) and self.vote:
            sim = class_similarity(features, self.memory, self.memory_classes, len(self.labels) + 1)
            if self.centred_vote:
                sim[:, -1] = sim[:, np.unique(self.memory_classes)].mean(axis=1)
            z = z + self.vote * sim
        return z.astype(np.float32)

    def probs(self, features: Features) -> NDArray[np.float32]:
        return softmax(self.logits(features))

    def known(self, probs: NDArray[np.float32]) -> NDArray[np.bool_]:
        """Which photos, given their ``probs``, are one of this head's fruits."""
        return known_mask(
            probs, len(self.labels), self.known_threshold, self.reject_below,
            self.reject_rule_fruits,
        )  # fmt: skip

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        meta = {"labels": list(self.labels), "known_threshold": self.known_threshold,
                "method": self.method, "vote": self.vote,
                "centred_vote": self.centred_vote,
                "reject_below": self.reject_below,
                "reject_rule_fruits": self.reject_rule_fruits}  # fmt: skip
        np.savez(out, weight=self.weight, bias=self.bias, memory=self.memory,
                 memory_classes=self.memory_classes, meta=np.array(json.dumps(meta)))  # fmt: skip
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Head:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return cls(
                    labels=tuple(meta["labels"]),
                    weight=z["weight"].astype(np.float32),
                    bias=z["bias"].astype(np.float32),
                    known_threshold=float(meta["known_threshold"]),
                    method=str(meta["method"]),
                    memory=z["memory"].astype(np.float32),
                    memory_classes=z["memory_classes"].astype(np.int64),
                    vote=float(meta["vote"]),
                    centred_vote=bool(meta.get("centred_vote", False)),
                    reject_below=_optional_float(meta.get("reject_below")),
                    reject_rule_fruits=int(meta.get("reject_rule_fruits", 0)),
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"not a stored head: {exc}") from exc


def _optional_float(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    raise ValueError(f"not a number: {value!r}")


def known_score(probs: NDArray[np.floating], n_fruits: int, rule: str) -> NDArray[np.floating]:
    """The one score of each "known" rule (``model.bundle.KNOWN_RULES``), higher = more like one
    of the ``n_fruits`` fruits: 1 - the "none of these" probability (column ``n_fruits``) for
    ``not-none``, the top fruit's probability for ``top-fruit``. Training chooses each rule's
    cut on it, the open-set benchmark measures it, and ``known_mask`` applies it."""
    if rule == NOT_NONE:
        return 1.0 - probs[:, n_fruits]
    if rule == TOP_FRUIT:
        top: NDArray[np.floating] = probs[:, :n_fruits].max(axis=1)
        return top
    raise ModelError(f"unknown known rule {rule!r}; choose one of {NOT_NONE}, {TOP_FRUIT}")


def known_mask(
    probs: NDArray[np.float32],
    n_fruits: int,
    known_threshold: float,
    reject_below: float | None = None,
    reject_rule_fruits: int = 0,
) -> NDArray[np.bool_]:
    """Which photos are "known": the top of their ``n_fruits`` fruit probabilities reaches
    ``known_threshold``; or, with ``reject_below`` and a top fruit among the first
    ``reject_rule_fruits``, their "none of these" probability (the last column) is below it.
    The second rule asks "is it one of these fruits?" rather than "is it surely this one?": a
    photo torn between two fruits is still a fruit, and the pick-list shows both."""
    out: NDArray[np.bool_] = known_score(probs, n_fruits, TOP_FRUIT) >= known_threshold
    if reject_below is not None:
        # Known when 1 - the score, p(none), is below reject_below. The score is taken in
        # float64, where 1 - (1 - p) gives a float32 p back exactly (down to p = 2**-29, where
        # 1 - p rounds to 1 but any cut a training or ``adapt`` chooses is far higher), and
        # compared in the probabilities' own precision: the photos known are the same as when
        # p(none) itself was compared.
        score = known_score(probs.astype(np.float64), n_fruits, NOT_NONE)
        by_reject = (1.0 - score).astype(probs.dtype) < reject_below
        out = np.where(probs[:, :n_fruits].argmax(axis=1) < reject_rule_fruits, by_reject, out)
    return out


def unit(x: NDArray[np.floating]) -> NDArray[np.float32]:
    out: NDArray[np.float32] = (
        x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    ).astype(np.float32)
    return out


def class_similarity(
    features: Features, memory: Features, classes: NDArray[np.int64], n_classes: int
) -> NDArray[np.float32]:
    """Per class, the mean cosine similarity of each photo to its 3 nearest labelled photos
    of that class (0 for a class without labelled photos)."""
    sim = unit(features) @ memory.T
    out = np.zeros((len(features), n_classes), np.float32)
    for c in np.unique(classes):
        s = sim[:, classes == c]
        k = min(3, s.shape[1])
        out[:, c] = np.sort(s, axis=1)[:, -k:].mean(axis=1)
    return out
