"""Benchmarks that print figures: raw ONNX Runtime throughput, model load, end-to-end latency."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fruitstream.core.classifier import PIPELINE_CHUNK, Classifier
from fruitstream.core.imaging import ImageLimits
from fruitstream.core.precision import cpu_features
from fruitstream.model.bundle import PRECISIONS, ModelBundle

if TYPE_CHECKING:
    from fruitstream.pipeline import Upload


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


def end_to_end(clf: Classifier, files: Sequence[Path], repeats: int) -> dict[str, Any]:
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


def precision_comparison(bundle: ModelBundle, rounds: int, threads: int = 0) -> dict[str, Any]:
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
    out: dict[str, Any] = {
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


def format_precision_comparison(r: dict[str, Any]) -> list[str]:
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
) -> dict[str, Any]:
    clf = Classifier(bundle, threads=threads)
    raw1 = raw_throughput(clf, 1, repeats * 3)
    raw32 = raw_throughput(clf, 32, repeats)
    lanes = raw_lanes_throughput(clf, repeats)
    result: dict[str, Any] = {
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


def format_classifier_benchmark(r: dict[str, Any]) -> str:
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
) -> dict[str, Any]:
    """Embedded pipeline: submit ``n`` photos -> all results recorded, against raw throughput.

    Memory: a ``fruitstream worker`` process classifies ``memory_n`` photos; its peak RSS is
    read after the first 500 and at the end.
    """
    import os
    import subprocess
    import sys
    import threading

    from fruitstream.bootstrap import build_backends, build_classifier
    from fruitstream.config import load_settings

    blobs = [(f.name, f.read_bytes()) for f in files]

    settings = load_settings(data_dir=workdir / "throughput")
    clf = build_classifier(settings)
    backends = build_backends(settings)
    pipeline = backends.pipeline()
    batch = numbered_uploads(blobs, n)
    raws, lane_raws, rates = [], [], []
    # Raw and pipeline runs alternate, so that both see the same noise of a shared machine.
    for _ in range(rounds):
        raws.append(raw_throughput(clf, 32, 5)["images_per_s"])
        lane_raws.append(raw_lanes_throughput(clf, 5)["images_per_s"])
        worker = backends.worker(clf)
        started = time.perf_counter()
        report = pipeline.submit(batch)
        sid = report.session_id
        worker.run(threading.Event(), until=lambda sid=sid: pipeline.progress(sid).complete)  # type: ignore[misc]
        rates.append(n / (time.perf_counter() - started))
    raw = statistics.median(raws)
    lane_raw = statistics.median(lane_raws)
    rate = statistics.median(rates)
    result: dict[str, Any] = {
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
    mem_backends = build_backends(mem_settings)
    mem_pipeline = mem_backends.pipeline()
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
) -> dict[str, Any]:
    """Peak RSS of a ``fruitstream worker`` process classifying ``normal`` photos mixed with
    ``large`` images just under the pixel limit (every lane may get one at once)."""
    import os
    import subprocess
    import sys

    from fruitstream.bootstrap import build_backends
    from fruitstream.config import load_settings

    settings = load_settings(data_dir=workdir)
    big = near_limit_images(settings.limits)
    blobs = [(f.name, f.read_bytes()) for f in files] or big
    uploads = numbered_uploads(blobs, normal)
    uploads += numbered_uploads(big, large, start=normal)
    # Large ones spread through the batch, several in each worker batch.
    uploads.sort(key=lambda u: hash(u.filename) % 97)
    pipeline = build_backends(settings).pipeline()
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
        "ok": sum(r.status == "ok" for r in rows),
        "errors": sum(r.status == "error" for r in rows),
        "seconds": elapsed,
        "worker_peak_rss_mb": round(peak / 1024, 1),
    }


def format_worker_memory_benchmark(r: dict[str, Any]) -> str:
    kinds = ", ".join(f"{k} ({v / 1e6:.1f} MB)" for k, v in r["near_limit_kinds"].items())
    return "\n".join(
        [
            f"photos                      {r['photos']} ({r['near_limit_images']} near the"
            f" pixel limit: {kinds})",
            f"classified / errors         {r['ok']} / {r['errors']} in {r['seconds']:.1f} s",
            f"worker peak RSS             {r['worker_peak_rss_mb']} MB",
        ]
    )


def format_pipeline_benchmark(r: dict[str, Any]) -> str:
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


def distributed_benchmark(
    files: Sequence[Path], n: int = 1000, latency_runs: int = 5, batch: int = 10
) -> dict[str, Any]:
    """Against the configured stack: a Spark job is started, measured and stopped here.

    Throughput is taken at steady state (first result to last of ``n`` photos); latency is
    submit to the last of ``batch`` rows in the results database, with the job warm.
    """
    import os
    import signal
    import subprocess
    import sys

    from fruitstream.bootstrap import build_backends, build_classifier
    from fruitstream.config import load_settings

    settings = load_settings()
    backends = build_backends(settings)
    pipeline = backends.pipeline()
    blobs = [(f.name, f.read_bytes()) for f in files]

    def wait(session_id: str, poll: float) -> None:
        while not pipeline.progress(session_id).complete:
            time.sleep(poll)

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
        wait(pipeline.submit(numbered_uploads(blobs, batch)).session_id, 0.5)
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
            wait(pipeline.submit(numbered_uploads(blobs, batch)).session_id, 0.02)
            latencies.append(time.perf_counter() - started)
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
        "spark_master": settings.spark_master,
        "trigger_s": settings.spark_trigger_seconds,
    }


def format_distributed_benchmark(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"raw ORT batch 32            {r['raw_batch32_images_per_s']:.1f} images/s",
            f"Spark, steady state         {r['steady_images_per_s']:.1f} images/s over "
            f"{r['photos']} photos = {r['ratio_to_raw']:.2f}x raw ({r['spark_master']})",
            f"{r['batch']}-photo batch latency     {r['latency_s_median']:.2f} s median "
            f"(runs {r['latency_s_runs']}, trigger {r['trigger_s']} s)",
        ]
    )


def _multipart(files: Sequence[tuple[str, bytes]], boundary: str) -> bytes:
    parts = []
    for name, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def http_benchmark(files: Sequence[Path], batch: int, rounds: int, workdir: Path) -> dict[str, Any]:
    """The HTTP API against the same work in process, taking turns, on the configured set-up.

    One photo: ``POST /v1/classify`` (raw body, one kept-alive connection) against
    ``FruitService.classify_one`` on the same bytes, in blocks taking turns. A batch:
    ``POST /v1/batches`` of ``batch`` photos against the CLI's submit call on files on disk,
    and against the whole ``fruitstream submit --queue-only`` command; the server does not
    classify meanwhile (``FRUITSTREAM_API_WORKER=false``).
    """
    import http.client
    import os
    import socket
    import subprocess
    import sys
    import uuid

    from fruitstream.config import load_settings
    from fruitstream.pipeline import Upload
    from fruitstream.service import FruitService

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {
        **os.environ,
        "FRUITSTREAM_DATA_DIR": str(workdir / "server"),
        "FRUITSTREAM_API_WORKER": "false",
    }
    env.pop("FRUITSTREAM_API_TOKENS", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "fruitstream", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                time.sleep(0.2)
        service = FruitService.create(load_settings(data_dir=workdir / "local"))
        blobs = [f.read_bytes() for f in files]

        def send(path: str, body: bytes, kind: str) -> int:
            """POST on the kept-alive connection; a new one if the server closed it (uvicorn
            closes connections idle for 5 s, as between two slow rounds)."""
            nonlocal conn
            for attempt in (1, 2):
                try:
                    conn.request("POST", path, body=body, headers={"Content-Type": kind})
                    response = conn.getresponse()
                    response.read()
                    return int(response.status)
                except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                    if attempt == 2:
                        raise
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            raise AssertionError("unreachable")

        def over_http(data: bytes) -> None:
            status = send("/v1/classify", data, "image/jpeg")
            if status != 200:
                raise RuntimeError(f"POST /v1/classify answered {status}")

        for b in blobs[:3]:
            service.classify_one(b)
            over_http(b)
        local_all: list[float] = []
        http_all: list[float] = []
        ratios = []

        def timed(fn: Callable[[bytes], object]) -> list[float]:
            out = []
            for b in blobs:
                started = time.perf_counter()
                fn(b)
                out.append(time.perf_counter() - started)
            return out

        # Whole blocks in turn, not photo by photo: ONNX Runtime's threads spin for a while
        # after each run, and on two cores the spinning of one process slowed the other's
        # next photo (the interleaved ratio read 1.14-1.29x; blocks read what one request
        # costs).
        for r in range(rounds):
            if r % 2:
                remote, local = timed(over_http), timed(service.classify_one)
            else:
                local, remote = timed(service.classify_one), timed(over_http)
            ratios.append(statistics.median(remote) / statistics.median(local))
            local_all += local
            http_all += remote

        folder = workdir / "batch"
        folder.mkdir()
        named = []
        for i in range(batch):
            src = files[i % len(files)]
            (folder / f"{i:05d}-{src.name}").write_bytes(src.read_bytes())
            named.append((f"{i:05d}-{src.name}", src.read_bytes()))
        on_disk = sorted(folder.iterdir())
        cli_env = {**env, "FRUITSTREAM_DATA_DIR": str(workdir / "cli")}
        submit_rates: list[float] = []
        command_rates: list[float] = []
        http_rates: list[float] = []

        def by_call() -> None:
            started = time.perf_counter()
            service.submit([Upload(p.name, p) for p in on_disk])
            submit_rates.append(batch / (time.perf_counter() - started))

        def by_command() -> None:
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "fruitstream", "submit", "--queue-only", str(folder)],
                env=cli_env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            command_rates.append(batch / (time.perf_counter() - started))

        def by_http() -> None:
            nonlocal conn
            boundary = uuid.uuid4().hex
            body = _multipart(named, boundary)
            conn.close()  # a fresh connection, as a client sending a batch would open
            started = time.perf_counter()
            status = send("/v1/batches", body, f"multipart/form-data; boundary={boundary}")
            if status != 202:
                raise RuntimeError(f"POST /v1/batches answered {status}")
            http_rates.append(batch / (time.perf_counter() - started))

        ways = [by_call, by_command, by_http]
        for r in range(rounds):
            # The order turns each round: what runs after a burst of writes (the backends
            # still flushing it) differs, so no side always pays for the other.
            for way in ways[r % 3 :] + ways[: r % 3]:
                way()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "rounds": rounds,
        "files": len(blobs),
        "in_process_ms": statistics.median(local_all) * 1000,
        "http_ms": statistics.median(http_all) * 1000,
        "one_photo_ratio": statistics.median(ratios),
        "ratios_per_round": [round(r, 3) for r in ratios],
        "batch": batch,
        "submit_images_per_s": statistics.median(submit_rates),
        "cli_command_images_per_s": statistics.median(command_rates),
        "http_submit_images_per_s": statistics.median(http_rates),
        "batch_ratio": statistics.median(
            [h / s for h, s in zip(http_rates, submit_rates, strict=True)]
        ),
        "batch_ratios_per_round": [
            round(h / s, 3) for h, s in zip(http_rates, submit_rates, strict=True)
        ],
        "batch_ratio_to_command": statistics.median(
            [h / c for h, c in zip(http_rates, command_rates, strict=True)]
        ),
    }


def format_http_benchmark(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"one photo in process         {r['in_process_ms']:.1f} ms (median)",
            f"one photo over HTTP          {r['http_ms']:.1f} ms = {r['one_photo_ratio']:.2f}x"
            f" in process (median of {r['rounds']} rounds: {r['ratios_per_round']})",
            f"submit of {r['batch']} photos, in process {r['submit_images_per_s']:.1f} images/s"
            " (the CLI's submit call)",
            f"`fruitstream submit` command {r['cli_command_images_per_s']:.1f} images/s"
            " (process start included)",
            f"submit over HTTP             {r['http_submit_images_per_s']:.1f} images/s ="
            f" {r['batch_ratio']:.2f}x the call (median of rounds {r['batch_ratios_per_round']}),"
            f" {r['batch_ratio_to_command']:.2f}x the command",
        ]
    )


def run_bench(args: Any, settings: Any) -> str:
    """What `fruitstream bench` prints for its parsed arguments."""
    from fruitstream.bootstrap import load_bundle
    from fruitstream.dataset import image_files

    bundle = load_bundle(settings, args.model, args.precision)
    files: list[Path] = []
    for p in args.images or []:
        files.extend(image_files(Path(p)) if Path(p).is_dir() else [Path(p)])
    if args.distributed:
        result = distributed_benchmark(files, args.distributed)
        return json.dumps(result, indent=2) if args.json else format_distributed_benchmark(result)
    if args.http is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            result = http_benchmark(files[: args.max_files], args.http, args.repeats, Path(tmp))
        return json.dumps(result, indent=2) if args.json else format_http_benchmark(result)
    if args.near_limit is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            result = worker_memory_benchmark(files[: args.max_files], args.near_limit, Path(tmp))
        return json.dumps(result, indent=2) if args.json else format_worker_memory_benchmark(result)
    if args.pipeline:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            result = pipeline_benchmark(files, args.pipeline, args.memory_images, Path(tmp))
        return json.dumps(result, indent=2) if args.json else format_pipeline_benchmark(result)
    files = files[: args.max_files]
    result = classifier_benchmark(bundle, files, repeats=args.repeats, threads=settings.threads)
    return json.dumps(result, indent=2) if args.json else format_classifier_benchmark(result)
