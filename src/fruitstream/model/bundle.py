"""Model bundle on disk: ``model.onnx`` + ``bundle.json`` (labels, preprocessing, rejection) + card.

The preprocessing settings travel with the model, like timm's pretrained config: training,
export, the CLI, the UI and the Spark job all read the same ``PreprocessConfig``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fruitstream.errors import ModelError

# The resizes a bundle's preprocessing names that training can choose: OpenCV's faster resize
# (``core.imaging``'s box reduction, then bilinear), and Pillow's antialiased bilinear.
BOX_BILINEAR = "box-bilinear"
TRAINED_RESIZES = (BOX_BILINEAR, "bilinear")
# The "known" rules, as bundle.json names them: a photo is one of the fruits when its score
# (``model.head.known_score``) reaches the rule's cut. "not-none": 1 - its "none of these"
# probability, known when that probability is below ``reject_below`` (models from v4 on);
# "top-fruit": its top fruit's probability, against ``known_threshold`` (models before).
NOT_NONE, TOP_FRUIT = "not-none", "top-fruit"
KNOWN_RULES = (NOT_NONE, TOP_FRUIT)

if TYPE_CHECKING:  # numpy is loaded only when a head is
    import numpy as np
    from numpy.typing import NDArray

    from fruitstream.model.head import Head

BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.onnx"  # the fp32 graph
INT8_FILE = "model.int8.onnx"  # the same graph quantized (static, QDQ, per channel)
PRECISIONS = ("int8", "fp32")
CARD_FILE = "MODEL_CARD.md"
# The graphs' last layer as arrays: what ``fruitstream adapt`` starts from.
HEAD_FILE = "head.npz"
# Pooled features of training photos: where an adapted head must answer as the base does.
ANCHORS_FILE = "anchors.npz"
# The graphs' second output: the pooled features the last layer reads, so that ``adapt``
# embeds photos with the very network that classifies them.
FEATURES_OUTPUT = "features"


@dataclass(frozen=True)
class PreprocessConfig:
    """How an RGB image becomes the model's input: resize and crop here, normalize in the graph."""

    input_size: int = 224
    # Shorter side is resized to input_size / crop_pct, then the centre is cropped.
    crop_pct: float = 1.0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    # Transparent pixels are composited on this colour (the studio photos are on white).
    background: tuple[int, int, int] = (255, 255, 255)

    @property
    def resize_to(self) -> int:
        return round(self.input_size / self.crop_pct)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return cls(
            input_size=int(data["input_size"]),
            crop_pct=float(data["crop_pct"]),
            mean=_triple(data["mean"], float),
            std=_triple(data["std"], float),
            interpolation=str(data["interpolation"]),
            background=_triple(data["background"], int),
        )


def _triple(values: Any, kind: type) -> Any:
    items = tuple(kind(v) for v in values)
    if len(items) != 3:
        raise ModelError(f"expected three values, got {values!r}")
    return items


@dataclass(frozen=True)
class ModelBundle:
    """Everything needed to run and describe one trained model."""

    name: str
    version: str
    labels: tuple[str, ...]
    preprocess: PreprocessConfig
    # The network has one more output than labels: the "none of these" class.
    has_reject_class: bool
    # A photo is "known" when the top fruit's probability reaches this value.
    known_threshold: float
    path: Path = field(compare=False)
    metrics: dict[str, Any] = field(default_factory=dict, compare=False)
    # The graph this instance runs. bundle.json names the preferred one ("int8" when the
    # bundle ships it); ``core.precision.choose_precision`` decides per machine.
    precision: str = "fp32"
    # Why this graph runs (set when a precision is chosen), for status, bench and the UI.
    precision_reason: str = field(default="", compare=False)
    # How it was trained: the training config and how long each step took.
    training: dict[str, Any] = field(default_factory=dict, compare=False)
    # An adapted version: the same graphs with this last layer instead of their own
    # (``labels`` and ``known_threshold`` are then the head's), and the version's name.
    head: Head | None = field(default=None, compare=False)
    adapted: str = ""
    # The rule of models from v4 on: a photo is "known" when its "none of these" probability is
    # below this value (None: the top fruit's probability against ``known_threshold``).
    reject_below: float | None = None
    _base: ModelBundle | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def known_rule(self) -> str:
        """The name of this bundle's "known" rule (``KNOWN_RULES``): ``not-none`` when it has a
        ``reject_below``, else ``top-fruit``."""
        return NOT_NONE if self.reject_below is not None else TOP_FRUIT

    def base_head(self) -> Head:
        """The graphs' own last layer (``head.npz``), the prior of every adapted version."""
        import numpy as np

        from fruitstream.model.head import Head

        base = self.base
        try:
            with np.load(base.path / HEAD_FILE, allow_pickle=False) as z:
                weight, bias = z["weight"], z["bias"]
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"model bundle {base.path} has no usable {HEAD_FILE}: {exc}") from exc
        return Head(
            base.labels, weight, bias, base.known_threshold,
            reject_below=base.reject_below,
            reject_rule_fruits=len(base.labels) if base.reject_below is not None else 0,
        )  # fmt: skip

    def anchors(self) -> Any:
        """The anchors' features (float32, one row per photo), or None when not shipped."""
        return self.anchors_with_fruits()[0]

    def anchors_with_fruits(self) -> tuple[Any, list[str] | None]:
        """The anchors' features and each row's fruit ("" for a negative); (None, None) when
        not shipped, and no fruits for anchors written before v4."""
        path = self.base.path / ANCHORS_FILE
        if not path.is_file():
            return None, None
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as z:
                fruits = [str(f) for f in z["labels"]] if "labels" in z.files else None
                return z["features"].astype(np.float32), fruits
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path} is not usable: {exc}") from exc

    def known(self, probs: NDArray[np.float32]) -> NDArray[np.bool_]:
        """Which photos, given the probabilities this bundle gives them, are a known fruit:
        the adapted head's rule; else the "none of these" probability against ``reject_below``
        when the bundle has one, or the top fruit's probability against ``known_threshold``."""
        from fruitstream.model.head import known_mask

        if self.head is not None:
            return self.head.known(probs)
        n = len(self.labels)  # the reject rule, when set, covers every fruit of the bundle
        return known_mask(probs, n, self.known_threshold, self.reject_below, n)

    @property
    def base(self) -> ModelBundle:
        """The shipped bundle under an adapted version (itself when not adapted)."""
        return self._base or self

    def with_head(self, head: Head | None, adapted: str = "") -> ModelBundle:
        """This bundle's graphs with another last layer (None: their own)."""
        base = self.base
        if head is None:
            return base
        out = replace(
            base, labels=head.labels, known_threshold=head.known_threshold,
            head=head, adapted=adapted,
        )  # fmt: skip
        object.__setattr__(out, "_base", base)
        return out

    @property
    def onnx_path(self) -> Path:
        return self.onnx_path_for(self.precision)

    def has_precision(self, precision: str) -> bool:
        return precision in PRECISIONS and self._file(precision).is_file()

    def _file(self, precision: str) -> Path:
        return self.path / (INT8_FILE if precision == "int8" else MODEL_FILE)

    def onnx_path_for(self, precision: str) -> Path:
        if precision not in PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        path = self._file(precision)
        if not path.is_file():
            raise ModelError(f"model bundle {self.path} has no {precision} graph ({path.name})")
        return path

    def with_precision(self, precision: str | None, reason: str = "") -> ModelBundle:
        """This bundle running its ``precision`` graph (None or "auto": its preferred one)."""
        if precision in (None, "", "auto"):
            precision = self.precision
        if precision == self.precision and reason == self.precision_reason:
            return self
        self.onnx_path_for(precision)  # fails clearly when the graph is absent
        base = replace(self.base, precision=precision, precision_reason=reason)
        return base.with_head(self.head, self.adapted)

    @property
    def model_version(self) -> str:
        """What result rows record: ``name:version``, plus ``+fp32`` when the bundle's int8
        default was overridden, so that comparison runs are told apart."""
        default = "int8" if self.has_precision("int8") else "fp32"
        suffix = "" if self.precision == default else f"+{self.precision}"
        adapted = f"+{self.adapted}" if self.adapted else ""
        return f"{self.name}:{self.version}{adapted}{suffix}"

    @property
    def card_path(self) -> Path:
        return self.path / CARD_FILE

    @property
    def num_outputs(self) -> int:
        """The graph's first output's width (the base's fruits, and the reject class)."""
        base = self.base
        return len(base.labels) + (1 if base.has_reject_class else 0)

    @classmethod
    def load(cls, path: str | Path) -> ModelBundle:
        root = Path(path)
        meta_path = root / BUNDLE_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelError(f"no model bundle at {root} (missing {BUNDLE_FILE})") from exc
        except json.JSONDecodeError as exc:
            raise ModelError(f"{meta_path} is not valid JSON: {exc}") from exc
        if not (root / MODEL_FILE).is_file():
            raise ModelError(f"model bundle {root} has no {MODEL_FILE}")
        try:
            bundle = cls(
                name=str(meta["name"]),
                version=str(meta["version"]),
                labels=tuple(str(label) for label in meta["labels"]),
                preprocess=PreprocessConfig.from_dict(meta["preprocess"]),
                has_reject_class=bool(meta["has_reject_class"]),
                known_threshold=float(meta["known_threshold"]),
                path=root,
                metrics=dict(meta.get("metrics", {})),
                precision=str(meta.get("precision", "fp32")),
                training=dict(meta.get("training", {})),
                reject_below=(
                    None if meta.get("reject_below") is None else float(meta["reject_below"])
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{meta_path} is missing or has a bad field: {exc}") from exc
        # Bundles written before the rule had a name in bundle.json read it from reject_below.
        named = meta.get("known_rule", bundle.known_rule)
        if named != bundle.known_rule:
            raise ModelError(
                f"{meta_path} names the known rule {named!r}, but its reject_below"
                f" ({bundle.reject_below}) makes it {bundle.known_rule!r}"
                f" (rules: {', '.join(KNOWN_RULES)})"
            )
        bundle.onnx_path_for(bundle.precision)
        return bundle

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "labels": list(self.labels),
            "preprocess": asdict(self.preprocess),
            "has_reject_class": self.has_reject_class,
            "known_threshold": self.known_threshold,
            "reject_below": self.reject_below,
            "known_rule": self.known_rule,
            "precision": self.precision,
            "metrics": self.metrics,
            "training": self.training,
        }

    def save_metadata(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / BUNDLE_FILE).write_text(
            json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8"
        )


def default_bundle_dir() -> Path:
    """The model shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "bundles" / "fruits15"
