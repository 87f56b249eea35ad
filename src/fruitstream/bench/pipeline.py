"""Embedded pipeline benchmarks: submit to results against raw throughput, worker memory."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from fruitstream.bench.model import Report, raw_lanes_throughput, raw_throughput
from fruitstream.domain import ImageLimits, Status
from fruitstream.pipeline import Upload


def numbered_uploads(
    blobs: Sequence[tuple[str, bytes]], count: int, start: int = 0
) -> list[Upload]:
    """``count`` uploads cycling through ``blobs``, each with a distinct numbered name."""
    from fruitstream.pipeline import Upload

    return [
        Upload(f"{i:05d}-{blobs[i % len(blobs)][0]}", blobs[i % len(blobs)][1])
        for i in range(start, start + count)
    ]


def _rss_peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def pipeline_benchmark(
    files: Sequence[Path], n: int, memory_n: int, workdir: Path, rounds: int = 3
) -> Report:
    """Embedded pipeline: submit ``n`` photos -> all results recorded, against raw throughput.

    Memory: a ``fruitstream worker`` process classifies ``memory_n`` photos; its peak RSS is
    read after the first 500 and at the end.
    """
    import os
    import subprocess
    import sys
    import threading

    from fruitstream.bootstrap import build_classifier, build_service
    from fruitstream.config import load_settings

    blobs = [(f.name, f.read_bytes()) for f in files]

    settings = load_settings(data_dir=workdir / "throughput")
    service = build_service(settings)
    clf = build_classifier(settings)  # the concrete one: raw runs time its session
    pipeline = service.pipeline()
    batch = numbered_uploads(blobs, n)
    raws, lane_raws, rates = [], [], []
    # Raw and pipeline runs alternate, so that both see the same noise of a shared machine.
    for _ in range(rounds):
        raws.append(raw_throughput(clf, 32, 5)["images_per_s"])
        lane_raws.append(raw_lanes_throughput(clf, 5)["images_per_s"])
        worker = service.worker(clf)
        started = time.perf_counter()
        report = pipeline.submit(batch)
        sid = report.session_id
        worker.run(threading.Event(), until=lambda sid=sid: pipeline.progress(sid).complete)  # type: ignore[misc]
        rates.append(n / (time.perf_counter() - started))
    raw = statistics.median(raws)
    lane_raw = statistics.median(lane_raws)
    rate = statistics.median(rates)
    result: Report = {
        "rounds": rounds,
        "raw_batch32_images_per_s": raw,
        "raw_lanes_images_per_s": lane_raw,
        "pipeline_images": n,
        "pipeline_images_per_s": rate,
        "ratio_to_raw": rate / raw,
        "ratio_to_raw_lanes": rate / lane_raw,
        "ratios_per_round": [round(p / r, 3) for p, r in zip(rates, raws, strict=True)],
    }

    mem_dir = workdir / "memory"
    env = {**os.environ, "FRUITSTREAM_DATA_DIR": str(mem_dir)}
    mem_settings = load_settings(data_dir=mem_dir)
    mem_pipeline = build_service(mem_settings).pipeline()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fruitstream", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        sessions = []
        peaks: dict[str, int] = {}
        chunk = 500
        for start in range(0, memory_n, chunk):
            uploads = numbered_uploads(blobs, min(chunk, memory_n - start), start)
            sessions.append(mem_pipeline.submit(uploads))
            # Keep the queue short so that the submitter's own pace does not matter.
            while sum(mem_pipeline.progress(s.session_id).done for s in sessions) < start:
                time.sleep(0.2)
            if start == chunk:
                peaks["500"] = _rss_peak_kb(proc.pid)
        while not all(mem_pipeline.progress(s.session_id).complete for s in sessions):
            time.sleep(0.2)
        peaks[str(memory_n)] = _rss_peak_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    result["worker_peak_rss_mb"] = {k: round(v / 1024, 1) for k, v in peaks.items()}
    return result


def near_limit_images(limits: ImageLimits) -> list[tuple[str, bytes]]:
    """Images just under the pixel limit, of the kinds that cost most to decode: RGBA and
    palette PNG (no draft decoding), 16-bit greyscale PNG, and a baseline JPEG."""
    import io

    import numpy as np
    from PIL import Image

    side = int((limits.max_pixels * 0.98) ** 0.5)
    # Smooth gradients: a few hundred kilobytes that decode to hundreds of megabytes, the
    # cheapest way to make a worker spend memory (the 208 KB PNG of the reliability issue).
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    base = (ramp[None, :] * 0.5 + ramp[:, None] * 0.5).astype(np.uint8)
    grey = (255 - base).astype(np.uint8)
    images = {
        "near-limit-rgba.png": Image.fromarray(np.dstack([grey, base, grey, base]), "RGBA"),
        "near-limit-palette.png": Image.fromarray(grey, "L").convert("P"),
        "near-limit-16bit.png": Image.fromarray(grey.astype(np.uint16) * 257),
        "near-limit.jpg": Image.fromarray(np.dstack([grey, base, grey]), "RGB"),
    }
    out = []
    for name, img in images.items():
        buf = io.BytesIO()
        img.save(buf, "JPEG" if name.endswith(".jpg") else "PNG")
        out.append((name, buf.getvalue()))
    return out


def worker_memory_benchmark(
    files: Sequence[Path], large: int, workdir: Path, normal: int = 64
) -> Report:
    """Peak RSS of a ``fruitstream worker`` process classifying ``normal`` photos mixed with
    ``large`` images just under the pixel limit (every lane may get one at once)."""
    import os
    import subprocess
    import sys

    from fruitstream.bootstrap import build_service
    from fruitstream.config import load_settings

    settings = load_settings(data_dir=workdir)
    big = near_limit_images(settings.limits)
    blobs = [(f.name, f.read_bytes()) for f in files] or big
    uploads = numbered_uploads(blobs, normal)
    uploads += numbered_uploads(big, large, start=normal)
    # Large ones spread through the batch, several in each worker batch.
    uploads.sort(key=lambda u: hash(u.filename) % 97)
    pipeline = build_service(settings).pipeline()
    report = pipeline.submit(uploads)
    env = {**os.environ, "FRUITSTREAM_DATA_DIR": str(workdir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fruitstream", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.perf_counter()
    try:
        while not pipeline.progress(report.session_id).complete:
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        peak = _rss_peak_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    rows = pipeline.results_of(report.session_id)
    return {
        "photos": len(uploads),
        "near_limit_images": large,
        "near_limit_kinds": {name: len(data) for name, data in big},
        "ok": sum(r.status == Status.OK for r in rows),
        "errors": sum(r.status == Status.ERROR for r in rows),
        "seconds": elapsed,
        "worker_peak_rss_mb": round(peak / 1024, 1),
    }


def format_worker_memory_benchmark(r: Report) -> str:
    kinds = ", ".join(f"{k} ({v / 1e6:.1f} MB)" for k, v in r["near_limit_kinds"].items())
    return "\n".join(
        [
            f"photos                      {r['photos']} ({r['near_limit_images']} near the"
            f" pixel limit: {kinds})",
            f"classified / errors         {r['ok']} / {r['errors']} in {r['seconds']:.1f} s",
            f"worker peak RSS             {r['worker_peak_rss_mb']} MB",
        ]
    )


def format_pipeline_benchmark(r: Report) -> str:
    rss = ", ".join(f"after {k}: {v} MB" for k, v in r["worker_peak_rss_mb"].items())
    return "\n".join(
        [
            f"raw ORT batch 32            {r['raw_batch32_images_per_s']:.1f} images/s",
            f"raw ORT in lanes            {r['raw_lanes_images_per_s']:.1f} images/s",
            f"pipeline ({r['pipeline_images']} photos)      "
            f"{r['pipeline_images_per_s']:.1f} images/s = {r['ratio_to_raw']:.2f}x raw "
            f"(medians of {r['rounds']} rounds; per round {r['ratios_per_round']}); "
            f"{r['ratio_to_raw_lanes']:.2f}x raw in lanes",
            f"worker peak RSS             {rss}",
        ]
    )
