"""Load benchmark: concurrent clients on ``POST /v1/classify`` of a running ``fruitstream serve``.

On 2 cores the model is the bottleneck, so the figure to read is the 95th percentile under
load against ``clients`` times the sequential median: a server that queues requests fairly
and wastes nothing stays near 1x, and the target is at most 1.5x with no error.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from fruitstream.bench.model import Report


@contextmanager
def served(workdir: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """A ``fruitstream serve`` process on a free port of 127.0.0.1, without tokens; its URL."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    environ = {**os.environ, "FRUITSTREAM_DATA_DIR": str(workdir / "server"), **(env or {})}
    environ.pop("FRUITSTREAM_API_TOKENS", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "fruitstream", "serve", "--port", str(port)],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def load_benchmark(
    files: Sequence[Path], requests: int, workdir: Path, clients: int = 8, sequential: int = 50
) -> Report:
    """``sequential`` photos one after the other, then ``requests`` from ``clients`` threads
    at once (each its own connection), all on the same server."""
    from fruitstream.client import Client, ClientError

    blobs = [(f.name, f.read_bytes()) for f in files]
    with served(workdir, {"FRUITSTREAM_API_WORKER": "false"}) as url:
        with Client(url) as api:
            for photo in blobs[:5]:  # warm-up: sessions, decoders, connection
                api.classify(photo)
            alone = []
            for i in range(sequential):
                started = time.perf_counter()
                api.classify(blobs[i % len(blobs)])
                alone.append(time.perf_counter() - started)
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client(first: int) -> None:
            with Client(url) as api:
                for i in range(first, requests, clients):
                    started = time.perf_counter()
                    try:
                        api.classify(blobs[i % len(blobs)])
                    except (ClientError, OSError) as exc:
                        with lock:
                            errors.append(str(exc))
                        continue
                    with lock:
                        latencies.append(time.perf_counter() - started)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    p50 = statistics.median(alone)
    p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 2 else float("nan")
    return {
        "clients": clients,
        "requests": requests,
        "errors": len(errors),
        "first_errors": errors[:3],
        "sequential_p50_ms": p50 * 1000,
        "load_p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "load_p95_ms": p95 * 1000,
        "p95_over_clients_x_p50": p95 / (clients * p50),
        "images_per_s": len(latencies) / elapsed,
    }


def format_load_benchmark(r: Report) -> str:
    return "\n".join(
        [
            f"sequential                  {r['sequential_p50_ms']:.1f} ms median per photo",
            f"{r['clients']} clients, {r['requests']} requests  p50 {r['load_p50_ms']:.1f} ms,"
            f" p95 {r['load_p95_ms']:.1f} ms, {r['images_per_s']:.1f} images/s,"
            f" {r['errors']} errors",
            f"p95 / ({r['clients']} x sequential p50)  {r['p95_over_clients_x_p50']:.2f}"
            " (target <= 1.5)",
        ]
    )
