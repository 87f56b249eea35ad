"""The classifier core: image bytes in, predictions out; the model loaded once per process."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fruitstream.core.imaging import (
    ImageLimits,
    Views,
    load_pixels,
    load_views,
    normalize,
    return_big_buffers_to_the_os,
)
from fruitstream.domain import Prediction, TopK
from fruitstream.errors import ImageError, ModelError
from fruitstream.model.bundle import FEATURES_OUTPUT, ModelBundle, default_bundle_dir

# Images one lane decodes and classifies at a time. Measured on 2 cores with the shipped
# model: chunks of 1, 2, 4 and 8 classify at the same rate within noise (a single-threaded
# layer is already large), but the session's memory arena grows with the chunk (worker peak
# RSS 208, 252, 349, 535 MB), and small chunks keep every lane busy to the end of a call.
PIPELINE_CHUNK = 1

# What classifying one image gives: a prediction, or the reason it could not be classified.
Outcome = Prediction | ImageError


class Classifier:
    """Runs a model bundle with ONNX Runtime. Build once per process and share it.

    ``threads`` is how many cores it may use (0: all). One photo runs on a session that spreads
    each layer over them, for latency. Many photos run in ``threads`` lanes, each a
    single-threaded session that decodes and classifies its own chunk: a multi-threaded layer
    waits for its slowest thread, so a decoder sharing the cores with it stalls both, while
    independent lanes simply take turns.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        *,
        limits: ImageLimits = ImageLimits(),
        threads: int = 0,
    ) -> None:
        return_big_buffers_to_the_os()
        self.bundle = bundle
        self.limits = limits
        self.threads = threads or (os.cpu_count() or 1)
        started = time.perf_counter()
        self._session = self._new_session(self.threads)
        self.load_seconds = time.perf_counter() - started
        model_input = self._session.get_inputs()[0]
        self._input = model_input.name
        # Bundles since v2 take uint8 NHWC pixels and normalize in the graph.
        self.takes_pixels = model_input.type == "tensor(uint8)"
        outputs = self._session.get_outputs()
        if outputs[0].shape[-1] != bundle.num_outputs:
            raise ModelError(
                f"{bundle.onnx_path} has {outputs[0].shape[-1]} outputs, bundle.json expects "
                f"{bundle.num_outputs}"
            )
        # The pooled features, when the graph gives them (bundles since v3.2): what an
        # adapted head reads, and what ``embed`` returns.
        self.gives_features = len(outputs) > 1 and outputs[1].name == FEATURES_OUTPUT
        self.embed_width = int(outputs[1].shape[-1]) if self.gives_features else 0
        self._lock = threading.Lock()
        self._lanes_lock = threading.Lock()
        # Built on first use: a process that classifies one photo at a time never pays for them.
        self._lanes: tuple[ThreadPoolExecutor, queue.SimpleQueue[Any]] | None = None

    def _new_session(self, threads: int) -> Any:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ModelError("onnxruntime is not installed") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(
                str(self.bundle.onnx_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load {self.bundle.onnx_path}: {exc}") from exc

    @classmethod
    def from_path(cls, path: str | Path | None = None, **kwargs: Any) -> Classifier:
        return cls(ModelBundle.load(path or default_bundle_dir()), **kwargs)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.bundle.labels

    def model_input(self, pixels: NDArray[np.uint8]) -> NDArray[Any]:
        """What the model takes for a batch of NHWC pixels."""
        return pixels if self.takes_pixels else normalize(pixels, self.bundle.preprocess)

    def random_input(self, batch: int, seed: int = 0) -> NDArray[Any]:
        """A random batch in the model's input format (benchmarks)."""
        size = self.bundle.preprocess.input_size
        rng = np.random.default_rng(seed)
        return self.model_input(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))

    def use(self, bundle: ModelBundle) -> None:
        """Run another version of the same graphs from now on (an adapted head, or none).

        A photo already being classified finishes with the version it started with: each
        call reads ``self.bundle`` once.
        """
        if bundle.base.onnx_path != self.bundle.base.onnx_path:
            raise ModelError(f"{bundle.model_version} does not run on {self.bundle.onnx_path}")
        if bundle.head is not None and not self.gives_features:
            raise ModelError(
                f"{bundle.onnx_path} has no {FEATURES_OUTPUT!r} output for an adapted head"
            )
        self.bundle = bundle

    def _probs(self, outputs: list[Any], bundle: ModelBundle) -> NDArray[np.float32]:
        if bundle.head is not None:
            return bundle.head.probs(np.asarray(outputs[1], dtype=np.float32))
        return np.asarray(outputs[0], dtype=np.float32)

    def run(self, batch: NDArray[Any]) -> NDArray[np.float32]:
        """Class probabilities (the reject class last, if any) for a batch of model input."""
        bundle = self.bundle
        return self._probs(self._run_locked(batch), bundle)

    def _run_locked(self, batch: NDArray[Any]) -> list[Any]:
        # ORT sessions are thread-safe, but two multi-threaded runs at once only thrash.
        with self._lock:
            return list(self._session.run(None, {self._input: batch}))

    def classify(self, data: bytes, top_k: int = 3) -> Prediction:
        """One image; raises ``ImageError`` when it cannot be classified."""
        bundle = self.bundle
        pixels = load_pixels(data, bundle.preprocess, self.limits)
        outputs = self._run_locked(self.model_input(pixels[None]))
        return self._predictions(self._probs(outputs, bundle), top_k, bundle)[0]

    def embed(self, images: Sequence[bytes]) -> list[NDArray[np.float32] | ImageError]:
        """The pooled features of each image (what an adapted head reads), in the lanes."""
        return [v[0] if isinstance(v, np.ndarray) else v for v in self.embed_views(images, 0)]

    def embed_views(
        self, images: Sequence[bytes], views: Views
    ) -> list[NDArray[np.float32] | ImageError]:
        """Per image, the pooled features of the photo and of its first ``views`` teaching
        views, or of the views it names (a row each, the photo first): what a labelled photo
        teaches ``adapt``."""
        if not self.gives_features:
            raise ModelError(f"{self.bundle.onnx_path} has no {FEATURES_OUTPUT!r} output")
        pool = self._lane_pool()[0]
        chunks = [pool.submit(self._embed_views_one, data, views) for data in images]
        return [c.result() for c in chunks]

    def _embed_views_one(self, data: bytes, views: Views) -> NDArray[np.float32] | ImageError:
        pixels = self._pixels(data, self.bundle, views)
        if isinstance(pixels, ImageError):
            return pixels
        return np.asarray(self._lane_outputs(self.model_input(pixels))[1], np.float32)

    def _pixels(
        self, data: bytes, bundle: ModelBundle, views: Views | None = None
    ) -> NDArray[np.uint8] | ImageError:
        """One photo's pixels (with ``views``: stacked with its teaching views'), or why it
        cannot be read: never one photo's problem for the others it came with."""
        try:
            if views is None:
                return load_pixels(data, bundle.preprocess, self.limits)
            return load_views(data, bundle.preprocess, views, self.limits)
        except ImageError as exc:
            return exc
        except Exception as exc:
            return ImageError(f"cannot read the image ({type(exc).__name__}: {exc})")

    def _lane_pool(self) -> tuple[ThreadPoolExecutor, queue.SimpleQueue[Any]]:
        """The threads that run lanes, and the idle lane sessions."""
        with self._lanes_lock:
            if self._lanes is None:
                sessions: queue.SimpleQueue[Any] = queue.SimpleQueue()
                for _ in range(self.threads):
                    sessions.put(self._new_session(1))
                pool = ThreadPoolExecutor(self.threads, thread_name_prefix="lane")
                self._lanes = (pool, sessions)
            return self._lanes

    def warm_up_lanes(self) -> None:
        """Build the batch lanes now rather than on the first batch."""
        self._lane_pool()

    def _lane_outputs(self, batch: NDArray[Any]) -> list[Any]:
        """The graph's outputs for ``batch`` on an idle lane session (a lane thread always
        finds one)."""
        sessions = self._lane_pool()[1]
        session = sessions.get()
        try:
            return list(session.run(None, {self._input: batch}))
        finally:
            sessions.put(session)

    def _run_in_lane(self, batch: NDArray[Any]) -> NDArray[np.float32]:
        return self._probs(self._lane_outputs(batch), self.bundle)

    def run_lanes(self, batches: Sequence[NDArray[Any]]) -> list[NDArray[np.float32]]:
        """Probabilities for ``batches`` of model input, spread over the lanes (benchmarks)."""
        return list(self._lane_pool()[0].map(self._run_in_lane, batches))

    def _classify_chunk(self, images: Sequence[bytes], top_k: int) -> list[Outcome]:
        bundle = self.bundle
        outcomes: list[Outcome | None] = [None] * len(images)
        positions, pixels = [], []
        for i, data in enumerate(images):
            loaded = self._pixels(data, bundle)
            if isinstance(loaded, ImageError):
                outcomes[i] = loaded
            else:
                pixels.append(loaded)
                positions.append(i)
        if pixels:
            outputs = self._lane_outputs(self.model_input(np.stack(pixels)))
            preds = self._predictions(self._probs(outputs, bundle), top_k, bundle)
            for pos, pred in zip(positions, preds, strict=True):
                outcomes[pos] = pred
        return [o for o in outcomes if o is not None]

    def classify_many(self, images: Sequence[bytes], top_k: int = 3) -> list[Outcome]:
        """Many images, in chunks spread over the lanes; a bad image gets its ``ImageError``,
        the others go on. Outcomes come back in the order of ``images``."""
        if not images:
            return []
        pool = self._lane_pool()[0]
        step = PIPELINE_CHUNK
        chunks = [
            pool.submit(self._classify_chunk, images[i : i + step], top_k)
            for i in range(0, len(images), step)
        ]
        return [outcome for chunk in chunks for outcome in chunk.result()]

    def _predictions(
        self, probs: NDArray[np.float32], top_k: int, bundle: ModelBundle
    ) -> list[Prediction]:
        labels = bundle.labels
        fruit = probs[:, : len(labels)]
        k = max(1, min(top_k, len(labels)))
        order = np.argsort(-fruit, axis=1)[:, :k]
        known = bundle.known(probs)
        preds = []
        for row, idx, is_known in zip(fruit, order, known, strict=True):
            best = int(idx[0])
            confidence = float(row[best])
            preds.append(
                Prediction(
                    label=labels[best],
                    confidence=confidence,
                    known=bool(is_known),
                    top_k=tuple(TopK(labels[int(j)], float(row[int(j)])) for j in idx),
                )
            )
        return preds
