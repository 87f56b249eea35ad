"""Benchmarks that print figures: raw ONNX Runtime throughput, model load, end-to-end latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fruitstream.classifier import Classifier
from fruitstream.model.bundle import ModelBundle


def _median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def raw_throughput(clf: Classifier, batch: int, repeats: int) -> dict[str, float]:
    """Model alone on random tensors: images per second and milliseconds per batch."""
    size = clf.bundle.preprocess.input_size
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    seconds = _median_seconds(lambda: clf.run(x), repeats)
    return {"batch": batch, "ms_per_batch": seconds * 1000, "images_per_s": batch / seconds}


def model_load(bundle: ModelBundle, repeats: int, threads: int) -> float:
    return _median_seconds(lambda: Classifier(bundle, threads=threads), repeats, warmup=0)


def end_to_end(clf: Classifier, files: Sequence[Path], repeats: int) -> dict[str, float]:
    """Single-image latency from bytes in memory: decode + preprocess + infer, per file."""
    blobs = [f.read_bytes() for f in files]
    medians = [_median_seconds(lambda b=b: clf.classify(b), repeats) for b in blobs]  # type: ignore[misc]
    return {
        "files": len(blobs),
        "ms_median": statistics.median(medians) * 1000,
        "ms_p90": float(np.percentile(medians, 90)) * 1000,
    }


def classifier_benchmark(
    bundle: ModelBundle, files: Sequence[Path], repeats: int = 10, threads: int = 0
) -> dict[str, Any]:
    clf = Classifier(bundle, threads=threads)
    raw1 = raw_throughput(clf, 1, repeats * 3)
    raw32 = raw_throughput(clf, 32, repeats)
    result: dict[str, Any] = {
        "model": f"{bundle.name} v{bundle.version}",
        "model_bytes": bundle.onnx_path.stat().st_size,
        "model_load_s": model_load(bundle, max(3, repeats // 2), threads),
        "raw_batch1": raw1,
        "raw_batch32": raw32,
    }
    if files:
        e2e = end_to_end(clf, files, repeats)
        e2e["ratio_to_raw_batch1"] = e2e["ms_median"] / raw1["ms_per_batch"]
        result["end_to_end_single"] = e2e
    return result


def format_classifier_benchmark(r: dict[str, Any]) -> str:
    lines = [
        f"model                      {r['model']} ({r['model_bytes'] / 1e6:.1f} MB)",
        f"model load (median)        {r['model_load_s'] * 1000:.0f} ms",
        f"raw ORT batch 1            {r['raw_batch1']['ms_per_batch']:.2f} ms/image, "
        f"{r['raw_batch1']['images_per_s']:.1f} images/s",
        f"raw ORT batch 32           {r['raw_batch32']['ms_per_batch'] / 32:.2f} ms/image, "
        f"{r['raw_batch32']['images_per_s']:.1f} images/s",
    ]
    e2e = r.get("end_to_end_single")
    if e2e:
        lines.append(
            f"end to end, single image   {e2e['ms_median']:.2f} ms median "
            f"(p90 {e2e['ms_p90']:.2f}) over {e2e['files']} files = "
            f"{e2e['ratio_to_raw_batch1']:.2f}x raw batch 1"
        )
    return "\n".join(lines)
