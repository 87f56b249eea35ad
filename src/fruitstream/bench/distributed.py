"""Distributed benchmark: a Spark job on the configured stack, throughput and batch latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from fruitstream.bench.model import Report, raw_throughput
from fruitstream.bench.pipeline import numbered_uploads


def distributed_benchmark(
    files: Sequence[Path], n: int = 1000, latency_runs: int = 5, batch: int = 10
) -> Report:
    """Against the configured stack: a Spark job is started, measured and stopped here.

    Throughput is taken at steady state (first result to last of ``n`` photos); latency is
    submit to the last of ``batch`` rows in the results database, with the job warm.
    """
    import os
    import signal
    import subprocess
    import sys

    from fruitstream.bootstrap import build_classifier, build_service
    from fruitstream.config import load_settings

    settings = load_settings()
    service = build_service(settings)
    pipeline = service.pipeline()
    blobs = [(f.name, f.read_bytes()) for f in files]

    raw = statistics.median(
        raw_throughput(build_classifier(settings), 32, 5)["images_per_s"] for _ in range(3)
    )
    job = subprocess.Popen(
        [sys.executable, "-m", "fruitstream", "spark-job"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # Warm-up: the model gets loaded on every executor.
        service.wait(pipeline.submit(numbered_uploads(blobs, batch)).session_id, poll=0.5)
        report = pipeline.submit(numbered_uploads(blobs, n))
        first: float | None = None
        done = 0
        while done < n:
            done = pipeline.progress(report.session_id).done
            if done and first is None:
                first, first_done = time.perf_counter(), done
            time.sleep(0.05)
        assert first is not None
        steady = (n - first_done) / max(1e-9, time.perf_counter() - first)
        latencies = []
        for _ in range(latency_runs):
            started = time.perf_counter()
            service.wait(pipeline.submit(numbered_uploads(blobs, batch)).session_id, poll=0.02)
            latencies.append(time.perf_counter() - started)
        job_info = next((i for _n, kind, i in service.live_workers() if kind == "spark"), {})
    finally:
        os.killpg(job.pid, signal.SIGTERM)
        job.wait(timeout=60)
    return {
        "raw_batch32_images_per_s": raw,
        "photos": n,
        "steady_images_per_s": steady,
        "ratio_to_raw": steady / raw,
        "batch": batch,
        "latency_s_median": statistics.median(latencies),
        "latency_s_runs": [round(x, 2) for x in latencies],
        # As the job's own heartbeat says (its settings are the job's).
        "spark_master": job_info.get("master", "?"),
        "trigger_s": job_info.get("trigger_s", "?"),
    }


def format_distributed_benchmark(r: Report) -> str:
    return "\n".join(
        [
            f"raw ORT batch 32            {r['raw_batch32_images_per_s']:.1f} images/s",
            f"Spark, steady state         {r['steady_images_per_s']:.1f} images/s over "
            f"{r['photos']} photos = {r['ratio_to_raw']:.2f}x raw ({r['spark_master']})",
            f"{r['batch']}-photo batch latency     {r['latency_s_median']:.2f} s median "
            f"(runs {r['latency_s_runs']}, trigger {r['trigger_s']} s)",
        ]
    )
