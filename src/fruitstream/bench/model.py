"""Model benchmarks: raw ONNX Runtime throughput, model load, end-to-end latency, int8 vs fp32."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fruitstream.core.classifier import PIPELINE_CHUNK, Classifier
from fruitstream.core.precision import cpu_features
from fruitstream.model.bundle import PRECISIONS, ModelBundle

# A benchmark's figures: the JSON document ``fruitstream bench --json`` prints, nested by name.
# What crosses into the rest of the code is typed (``BenchRequest`` in, text out).
Report = dict[str, Any]


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
    """Model alone on random input: images per second and milliseconds per batch."""
    x = clf.random_input(batch)
    seconds = _median_seconds(lambda: clf.run(x), repeats)
    return {"batch": batch, "ms_per_batch": seconds * 1000, "images_per_s": batch / seconds}


def raw_lanes_throughput(clf: Classifier, repeats: int) -> dict[str, float]:
    """Model alone in the batch lanes (one single-threaded session per core), in the chunks
    ``classify_many`` gives them."""
    batches = [clf.random_input(PIPELINE_CHUNK)] * max(4 * clf.threads, 32 // PIPELINE_CHUNK)
    seconds = _median_seconds(lambda: clf.run_lanes(batches), repeats)
    return {"lanes": clf.threads, "images_per_s": len(batches) * PIPELINE_CHUNK / seconds}


def model_load(bundle: ModelBundle, repeats: int, threads: int) -> float:
    return _median_seconds(lambda: Classifier(bundle, threads=threads), repeats, warmup=0)


def end_to_end(clf: Classifier, files: Sequence[Path], repeats: int) -> Report:
    """Single-image latency from bytes in memory (decode + preprocess + infer), against raw
    batch-1 inference measured in alternation with it.

    Each round times, for every file, one raw run on random input and then one classification
    of the file: a shared machine's slow spells then hit both sides of the ratio alike. The
    ratio is the median over rounds of median end to end / median raw.
    """
    blobs = [f.read_bytes() for f in files]
    x = clf.random_input(1)
    clf.run(x)
    for b in blobs[:3]:
        clf.classify(b)
    raw_all, e2e_all, ratios = [], [], []
    for _ in range(repeats):
        raw, e2e = [], []
        for b in blobs:
            started = time.perf_counter()
            clf.run(x)
            middle = time.perf_counter()
            clf.classify(b)
            raw.append(middle - started)
            e2e.append(time.perf_counter() - middle)
        ratios.append(statistics.median(e2e) / statistics.median(raw))
        raw_all += raw
        e2e_all += e2e
    return {
        "files": len(blobs),
        "rounds": repeats,
        "ms_median": statistics.median(e2e_all) * 1000,
        "ms_p90": float(np.percentile(e2e_all, 90)) * 1000,
        "raw_batch1_ms_median": statistics.median(raw_all) * 1000,
        "ratio_to_raw_batch1": statistics.median(ratios),
        "ratios_per_round": [round(r, 3) for r in ratios],
    }


def precision_comparison(bundle: ModelBundle, rounds: int, threads: int = 0) -> Report:
    """Every graph the bundle ships (int8, fp32) on the same random input, batch 1 and 32.

    Rounds alternate between the graphs, so that a shared machine's slow spells hit both; the
    speed-ups are medians of the per-round ratios.
    """
    available = [p for p in PRECISIONS if bundle.has_precision(p)]
    clfs = {p: Classifier(bundle.with_precision(p), threads=threads) for p in available}
    first = next(iter(clfs.values()))
    x1, x32 = first.random_input(1), first.random_input(32)
    b1: dict[str, list[float]] = {p: [] for p in clfs}
    b32: dict[str, list[float]] = {p: [] for p in clfs}
    for clf in clfs.values():  # warm-up
        clf.run(x1)
        clf.run(x32)
    for _ in range(rounds):
        for p, clf in clfs.items():
            b1[p].append(_median_seconds(lambda clf=clf: clf.run(x1), 9, warmup=0) * 1000)  # type: ignore[misc]
            b32[p].append(32 / _median_seconds(lambda clf=clf: clf.run(x32), 3, warmup=0))  # type: ignore[misc]
    out: Report = {
        p: {
            "model_bytes": clfs[p].bundle.onnx_path.stat().st_size,
            "batch1_ms": statistics.median(b1[p]),
            "batch32_images_per_s": statistics.median(b32[p]),
        }
        for p in clfs
    }
    out["rounds"] = rounds
    if {"int8", "fp32"} <= clfs.keys():
        r1 = [f / i for f, i in zip(b1["fp32"], b1["int8"], strict=True)]
        r32 = [i / f for i, f in zip(b32["int8"], b32["fp32"], strict=True)]
        out["int8_speedup_batch1"] = statistics.median(r1)
        out["int8_speedup_batch32"] = statistics.median(r32)
        out["int8_speedup_batch32_per_round"] = [round(r, 2) for r in r32]
    return out


def format_precision_comparison(r: Report) -> list[str]:
    lines = [f"graphs side by side ({r['rounds']} alternating rounds, random input):"]
    for p in PRECISIONS:
        if p in r:
            lines.append(
                f"  {p:<5} {r[p]['model_bytes'] / 1e6:5.1f} MB   batch 1 {r[p]['batch1_ms']:6.2f}"
                f" ms/image   batch 32 {r[p]['batch32_images_per_s']:6.1f} images/s"
            )
    if "int8_speedup_batch32" in r:
        lines.append(
            f"  int8 vs fp32: {r['int8_speedup_batch1']:.2f}x at batch 1,"
            f" {r['int8_speedup_batch32']:.2f}x at batch 32"
            f" (per round {r['int8_speedup_batch32_per_round']})"
        )
    return lines


def classifier_benchmark(
    bundle: ModelBundle, files: Sequence[Path], repeats: int = 10, threads: int = 0
) -> Report:
    clf = Classifier(bundle, threads=threads)
    raw1 = raw_throughput(clf, 1, repeats * 3)
    raw32 = raw_throughput(clf, 32, repeats)
    lanes = raw_lanes_throughput(clf, repeats)
    result: Report = {
        "cpu": cpu_features().describe(),
        "graph_chosen": {"precision": bundle.precision, "reason": bundle.precision_reason},
        "model": f"{bundle.name} v{bundle.version} ({bundle.precision})",
        "model_bytes": bundle.onnx_path.stat().st_size,
        "model_load_s": model_load(bundle, max(3, repeats // 2), threads),
        "raw_batch1": raw1,
        "raw_batch32": raw32,
        "raw_lanes": lanes,
    }
    if files:
        result["end_to_end_single"] = end_to_end(clf, files, repeats)
    result["precisions"] = precision_comparison(bundle, max(3, repeats // 2), threads)
    return result


def format_classifier_benchmark(r: Report) -> str:
    lines = [
        f"cpu                        {r['cpu']}",
        f"graph                      {r['graph_chosen']['precision']}:"
        f" {r['graph_chosen']['reason']}",
        f"model                      {r['model']} ({r['model_bytes'] / 1e6:.1f} MB)",
        f"model load (median)        {r['model_load_s'] * 1000:.0f} ms",
        f"raw ORT batch 1            {r['raw_batch1']['ms_per_batch']:.2f} ms/image, "
        f"{r['raw_batch1']['images_per_s']:.1f} images/s",
        f"raw ORT batch 32           {r['raw_batch32']['ms_per_batch'] / 32:.2f} ms/image, "
        f"{r['raw_batch32']['images_per_s']:.1f} images/s",
        f"raw ORT in {r['raw_lanes']['lanes']} lanes        "
        f"{r['raw_lanes']['images_per_s']:.1f} images/s (one single-threaded session per core)",
    ]
    e2e = r.get("end_to_end_single")
    if e2e:
        lines.append(
            f"end to end, single image   {e2e['ms_median']:.2f} ms median "
            f"(p90 {e2e['ms_p90']:.2f}) over {e2e['files']} files, alternating with raw "
            f"batch 1 ({e2e['raw_batch1_ms_median']:.2f} ms): "
            f"{e2e['ratio_to_raw_batch1']:.2f}x raw batch 1 "
            f"(median of {e2e['rounds']} rounds: {e2e['ratios_per_round']})"
        )
    if "precisions" in r:
        lines += format_precision_comparison(r["precisions"])
    return "\n".join(lines)
