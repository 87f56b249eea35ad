"""The classifier core: image bytes in, predictions out; one ONNX Runtime session per process."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fruitstream.errors import ImageError, ModelError
from fruitstream.imaging import ImageLimits, load_tensor
from fruitstream.model.bundle import ModelBundle, default_bundle_dir


@dataclass(frozen=True)
class TopK:
    label: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": self.confidence}


@dataclass(frozen=True)
class Prediction:
    """What the model says about one photo.

    ``label`` is always one of the known fruits (the closest guess); ``known`` is False when
    the photo is judged not to be one of them.
    """

    label: str
    confidence: float
    known: bool
    top_k: tuple[TopK, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": self.confidence,
            "known": self.known,
            "top_k": [t.to_dict() for t in self.top_k],
        }


# Images decoded ahead while the model runs on the previous chunk.
PIPELINE_CHUNK = 8

# What classifying one image gives: a prediction, or the reason it could not be classified.
Outcome = Prediction | ImageError


class Classifier:
    """Runs a model bundle with ONNX Runtime. Build once per process and share it."""

    def __init__(
        self,
        bundle: ModelBundle,
        *,
        limits: ImageLimits = ImageLimits(),
        threads: int = 0,
        batch_size: int = 32,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ModelError("onnxruntime is not installed") from exc
        self.bundle = bundle
        self.limits = limits
        self.batch_size = batch_size
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        started = time.perf_counter()
        try:
            self._session = ort.InferenceSession(
                str(bundle.onnx_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load {bundle.onnx_path}: {exc}") from exc
        self.load_seconds = time.perf_counter() - started
        self._input = self._session.get_inputs()[0].name
        outputs = self._session.get_outputs()[0].shape
        if outputs[-1] != bundle.num_outputs:
            raise ModelError(
                f"{bundle.onnx_path} has {outputs[-1]} outputs, bundle.json expects "
                f"{bundle.num_outputs}"
            )
        self._lock = threading.Lock()
        self._prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")

    @classmethod
    def from_path(cls, path: str | Path | None = None, **kwargs: Any) -> Classifier:
        return cls(ModelBundle.load(path or default_bundle_dir()), **kwargs)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.bundle.labels

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Class probabilities (the reject class last, if any) for a preprocessed batch."""
        # ORT sessions are thread-safe, but two 2-thread runs at once only thrash the cores.
        with self._lock:
            out = self._session.run(None, {self._input: batch})[0]
        return np.asarray(out, dtype=np.float32)

    def classify(self, data: bytes, top_k: int = 3) -> Prediction:
        """One image; raises ``ImageError`` when it cannot be classified."""
        tensor = load_tensor(data, self.bundle.preprocess, self.limits)
        return self._predictions(self.run(tensor[None]), top_k)[0]

    def _prepare(
        self, images: Sequence[bytes], start: int
    ) -> tuple[list[int], list[NDArray[np.float32]], dict[int, ImageError]]:
        positions, tensors, errors = [], [], {}
        for i, data in enumerate(images, start):
            try:
                tensors.append(load_tensor(data, self.bundle.preprocess, self.limits))
                positions.append(i)
            except ImageError as exc:
                errors[i] = exc
        return positions, tensors, errors

    def classify_many(self, images: Sequence[bytes], top_k: int = 3) -> list[Outcome]:
        """Many images, batched; a bad image gets its ``ImageError``, the others go on.

        Decoding the next chunk overlaps inference on the current one: Pillow, numpy and
        ONNX Runtime release the GIL, and on CPU a chunk of 8 costs per image what 32 does.
        """
        outcomes: list[Outcome | None] = [None] * len(images)
        step = max(1, min(self.batch_size, PIPELINE_CHUNK))
        starts = list(range(0, len(images), step))
        if not starts:
            return []
        pending = self._prefetch.submit(self._prepare, images[0:step], 0)
        for n in range(len(starts)):
            positions, tensors, errors = pending.result()
            if n + 1 < len(starts):
                nxt = starts[n + 1]
                pending = self._prefetch.submit(self._prepare, images[nxt : nxt + step], nxt)
            for i, exc in errors.items():
                outcomes[i] = exc
            if tensors:
                preds = self._predictions(self.run(np.stack(tensors)), top_k)
                for pos, pred in zip(positions, preds, strict=True):
                    outcomes[pos] = pred
        return [o for o in outcomes if o is not None]

    def _predictions(self, probs: NDArray[np.float32], top_k: int) -> list[Prediction]:
        labels = self.bundle.labels
        fruit = probs[:, : len(labels)]
        k = max(1, min(top_k, len(labels)))
        order = np.argsort(-fruit, axis=1)[:, :k]
        preds = []
        for row, idx in zip(fruit, order, strict=True):
            best = int(idx[0])
            confidence = float(row[best])
            preds.append(
                Prediction(
                    label=labels[best],
                    confidence=confidence,
                    known=confidence >= self.bundle.known_threshold,
                    top_k=tuple(TopK(labels[int(j)], float(row[int(j)])) for j in idx),
                )
            )
        return preds
