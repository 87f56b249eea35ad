"""The API's Prometheus metrics in the text format (no client library).

Requests by route, method and status, with their latency; photos by outcome on both paths
(``POST /v1/classify`` here; batch photos by every live worker, from their heartbeats); the
model's own time per photo; queue lag; what runs (build and model); the process itself.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

# Upper bounds of the latency histograms, seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (
        (k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")) for k, v in labels
    )
    return "{" + ",".join(f'{k}="{v}"' for k, v in escaped) + "}"


class Histogram:
    """Cumulative buckets, sum and count, one series per label set."""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._series: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, seconds: float) -> None:
        series = self._series.setdefault(labels, [0.0] * (len(BUCKETS) + 2))
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                series[i] += 1
        series[-2] += seconds
        series[-1] += 1

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, series in sorted(self._series.items()):
            for bound, count in zip(BUCKETS, series, strict=False):
                le = _labels((*labels, ("le", str(bound))))
                out.append(f"{self.name}_bucket{le} {int(count)}")
            out.append(f"{self.name}_bucket{_labels((*labels, ('le', '+Inf')))} {int(series[-1])}")
            out.append(f"{self.name}_sum{_labels(labels)} {series[-2]}")
            out.append(f"{self.name}_count{_labels(labels)} {int(series[-1])}")
        return out


def _family(name: str, kind: str, help_text: str, values: Mapping[Labels, float]) -> list[str]:
    """One metric family: its help, its type, a sample per label set."""
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    out += [f"{name}{_labels(labels)} {value}" for labels, value in sorted(values.items())]
    return out


class Metrics:
    """What this API process counted since it started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[Labels] = Counter()
        self.request_seconds = Histogram(
            "fruitstream_http_request_duration_seconds",
            "Time from a request's arrival to its last byte sent, by route and method.",
        )
        self.photos: Counter[Labels] = Counter()
        self.model_seconds = Histogram(
            "fruitstream_classify_seconds",
            "Time to decode and classify one photo of POST /v1/classify (the model's part of"
            " the request).",
        )

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(("route", route), ("method", method), ("status", str(status)))] += 1
            self.request_seconds.observe((("route", route), ("method", method)), seconds)

    def classify(self, seconds: float, outcome: str) -> None:
        """One photo of ``POST /v1/classify``: ``known``, ``unknown`` or ``error``."""
        with self._lock:
            self.photos[(("path", "classify"), ("outcome", outcome))] += 1
            self.model_seconds.observe((), seconds)

    def batch(self, queued: int, rejected: int) -> None:
        """Photos of a ``POST /v1/batches``: queued, or rejected at once."""
        with self._lock:
            self.photos[(("path", "batch"), ("outcome", "queued"))] += queued
            self.photos[(("path", "batch"), ("outcome", "rejected"))] += rejected

    def render(
        self,
        lag: float | None,
        info: Mapping[str, str],
        workers: Sequence[tuple[str, str, Mapping[str, object]]] = (),
    ) -> str:
        """The exposition: ``info`` labels the build, ``workers`` are the live workers'
        ``(name, kind, heartbeat info)``."""
        with self._lock:
            lines = _family(
                "fruitstream_http_requests_total",
                "counter",
                "Requests answered, by route template, method and status.",
                self.requests,
            )
            lines += self.request_seconds.lines()
            lines += _family(
                "fruitstream_photos_total",
                "counter",
                "Photos received by this process, by path (classify, batch) and outcome.",
                self.photos,
            )
            lines += self.model_seconds.lines()
        worker_photos: dict[Labels, float] = {}
        for name, kind, beat in workers:
            for key, outcome in (("processed", "recorded"), ("errors", "error")):
                value = beat.get(key)
                if isinstance(value, int | float):
                    labels = (("worker", name), ("kind", kind), ("outcome", outcome))
                    worker_photos[labels] = float(value)
        lines += _family(
            "fruitstream_worker_photos_total",
            "counter",
            "Batch photos each live worker recorded since it started, and how many of them are"
            " error rows (from the workers' heartbeats).",
            worker_photos,
        )
        if lag is not None:
            lines += _family(
                "fruitstream_queue_lag_messages",
                "gauge",
                "Photos queued and not yet classified (Kafka lag or embedded queue depth).",
                {(): lag},
            )
        lines += _family(
            "fruitstream_build_info",
            "gauge",
            "What runs: the fruitstream version, the model and its graph.",
            {tuple(sorted(info.items())): 1},
        )
        lines += process_lines()
        return "\n".join(lines) + "\n"


_START = time.time()


def process_lines() -> list[str]:
    """The standard process metrics, read from /proc where there is one."""
    values: dict[str, tuple[str, str, float]] = {
        "process_start_time_seconds": ("gauge", "Start time of the process (Unix time).", _START)
    }
    cpu = os.times()
    values["process_cpu_seconds_total"] = (
        "counter",
        "User and system CPU time spent, seconds.",
        cpu.user + cpu.system,
    )
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = float(line.split()[1]) * 1024
                values["process_resident_memory_bytes"] = ("gauge", "Resident memory.", rss)
        fds = Path("/proc/self/fd")
        values["process_open_fds"] = ("gauge", "Open file descriptors.", len(_listing(fds)))
    out = []
    for name, (kind, help_text, value) in values.items():
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return out


def _listing(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []
