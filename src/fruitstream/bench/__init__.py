"""Benchmarks that print figures, one module per subject: model, pipeline, distributed, HTTP."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fruitstream.bench.distributed import distributed_benchmark, format_distributed_benchmark
from fruitstream.bench.http import format_http_benchmark, http_benchmark
from fruitstream.bench.load import format_load_benchmark, load_benchmark
from fruitstream.bench.model import (
    Report,
    classifier_benchmark,
    format_classifier_benchmark,
    precision_comparison,
)
from fruitstream.bench.pipeline import (
    format_pipeline_benchmark,
    format_worker_memory_benchmark,
    pipeline_benchmark,
    worker_memory_benchmark,
)
from fruitstream.config import Settings

__all__ = ["BenchRequest", "Report", "precision_comparison", "run_bench"]


@dataclass(frozen=True)
class BenchRequest:
    """What ``fruitstream bench`` was asked: one benchmark, its photos and its sizes (every
    field from the command line, whose options hold the defaults)."""

    images: Sequence[str]
    model: str | None
    precision: str | None
    repeats: int
    max_files: int
    pipeline: int | None
    memory_images: int
    distributed: int | None
    http: int | None
    http_load: int | None
    clients: int
    near_limit: int | None
    adapt: bool
    draws: int
    methods: str
    adapt_labels: int
    open_set: bool
    tta: bool
    plot: str | None
    seed: int
    json: bool


def run_bench(req: BenchRequest, settings: Settings) -> str:
    """What ``fruitstream bench`` prints for a request."""
    from fruitstream.bootstrap import load_bundle
    from fruitstream.dataset import image_files

    files: list[Path] = []
    for p in req.images:
        files.extend(image_files(Path(p)) if Path(p).is_dir() else [Path(p)])
    result: Report
    with tempfile.TemporaryDirectory() as tmp:
        if req.adapt:
            from fruitstream.bench.adapt import adapt_benchmark, adapt_speed, format_adapt_benchmark

            bundle = load_bundle(settings, req.model, req.precision)
            result = adapt_benchmark(
                bundle,
                settings.dataset_dir,
                draws=req.draws,
                methods=req.methods.split(","),
                seed=req.seed,
            )
            if req.adapt_labels:
                result["speed"] = adapt_speed(
                    bundle, settings.dataset_dir, req.adapt_labels, Path(tmp)
                )
            text = format_adapt_benchmark(result)
        elif req.open_set:
            from fruitstream.bench.openset import (
                format_open_set_benchmark,
                open_set_benchmark,
                plot_open_set,
            )

            bundle = load_bundle(settings, req.model, req.precision)
            result = open_set_benchmark(bundle, settings.dataset_dir)
            text = format_open_set_benchmark(result)
            if req.plot:
                text += f"\ntrade-off curves drawn to {plot_open_set(result, Path(req.plot))}"
        elif req.tta:
            from fruitstream.bench.openset import format_tta_benchmark, tta_benchmark

            bundle = load_bundle(settings, req.model, req.precision)
            result = tta_benchmark(bundle, settings.dataset_dir)
            text = format_tta_benchmark(result)
        elif req.distributed:
            result = distributed_benchmark(files, req.distributed)
            text = format_distributed_benchmark(result)
        elif req.http_load is not None:
            result = load_benchmark(files[: req.max_files], req.http_load, Path(tmp), req.clients)
            text = format_load_benchmark(result)
        elif req.http is not None:
            result = http_benchmark(files[: req.max_files], req.http, req.repeats, Path(tmp))
            text = format_http_benchmark(result)
        elif req.near_limit is not None:
            result = worker_memory_benchmark(files[: req.max_files], req.near_limit, Path(tmp))
            text = format_worker_memory_benchmark(result)
        elif req.pipeline:
            result = pipeline_benchmark(files, req.pipeline, req.memory_images, Path(tmp))
            text = format_pipeline_benchmark(result)
        else:
            bundle = load_bundle(settings, req.model, req.precision)
            result = classifier_benchmark(
                bundle, files[: req.max_files], repeats=req.repeats, threads=settings.threads
            )
            text = format_classifier_benchmark(result)
    return json.dumps(result, indent=2) if req.json else text
