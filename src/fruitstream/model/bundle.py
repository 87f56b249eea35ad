"""Model bundle on disk: ``model.onnx`` + ``bundle.json`` (labels, preprocessing, rejection) + card.

The preprocessing settings travel with the model, like timm's pretrained config: training,
export, the CLI, the UI and the Spark job all read the same ``PreprocessConfig``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fruitstream.errors import ModelError

BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.onnx"
CARD_FILE = "MODEL_CARD.md"


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

    @property
    def onnx_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def card_path(self) -> Path:
        return self.path / CARD_FILE

    @property
    def num_outputs(self) -> int:
        return len(self.labels) + (1 if self.has_reject_class else 0)

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
            return cls(
                name=str(meta["name"]),
                version=str(meta["version"]),
                labels=tuple(str(label) for label in meta["labels"]),
                preprocess=PreprocessConfig.from_dict(meta["preprocess"]),
                has_reject_class=bool(meta["has_reject_class"]),
                known_threshold=float(meta["known_threshold"]),
                path=root,
                metrics=dict(meta.get("metrics", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{meta_path} is missing or has a bad field: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "labels": list(self.labels),
            "preprocess": asdict(self.preprocess),
            "has_reject_class": self.has_reject_class,
            "known_threshold": self.known_threshold,
            "metrics": self.metrics,
        }

    def save_metadata(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / BUNDLE_FILE).write_text(
            json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8"
        )


def default_bundle_dir() -> Path:
    """The model shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "models" / "fruits15"
