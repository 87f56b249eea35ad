"""The API's Prometheus metrics: counters and a latency histogram, no client library."""

from __future__ import annotations

import threading

# Upper bounds of the classify latency histogram, seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Counters and a latency histogram in Prometheus' text format (no client library)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.classified = 0
        self.errors = 0
        self.submitted = 0
        self.counts = [0] * len(BUCKETS)
        self.seconds = 0.0
        self.observed = 0

    def classify(self, seconds: float, ok: bool) -> None:
        with self._lock:
            if ok:
                self.classified += 1
            else:
                self.errors += 1
            self.observed += 1
            self.seconds += seconds
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.counts[i] += 1

    def batch(self, photos: int) -> None:
        with self._lock:
            self.submitted += photos

    def render(self, lag: float | None) -> str:
        with self._lock:
            lines = [
                "# HELP fruitstream_photos_classified_total Photos classified (POST /v1/classify).",
                "# TYPE fruitstream_photos_classified_total counter",
                f"fruitstream_photos_classified_total {self.classified}",
                "# HELP fruitstream_photo_errors_total Photos not classified (POST /v1/classify).",
                "# TYPE fruitstream_photo_errors_total counter",
                f"fruitstream_photo_errors_total {self.errors}",
                "# HELP fruitstream_batch_photos_total Photos submitted by POST /v1/batches.",
                "# TYPE fruitstream_batch_photos_total counter",
                f"fruitstream_batch_photos_total {self.submitted}",
                "# HELP fruitstream_classify_seconds Time to classify one photo over HTTP.",
                "# TYPE fruitstream_classify_seconds histogram",
            ]
            lines += [
                f'fruitstream_classify_seconds_bucket{{le="{bound}"}} {count}'
                for bound, count in zip(BUCKETS, self.counts, strict=True)
            ]
            lines += [
                f'fruitstream_classify_seconds_bucket{{le="+Inf"}} {self.observed}',
                f"fruitstream_classify_seconds_sum {self.seconds}",
                f"fruitstream_classify_seconds_count {self.observed}",
            ]
        if lag is not None:
            lines += [
                "# HELP fruitstream_queue_lag Photos queued and not yet classified.",
                "# TYPE fruitstream_queue_lag gauge",
                f"fruitstream_queue_lag {lag}",
            ]
        return "\n".join(lines) + "\n"
