"""What the app shows, computed without Streamlit: predictions, tables, grids, health."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fruitstream.bootstrap import Backends, build_backends, build_classifier
from fruitstream.classifier import Classifier, Prediction
from fruitstream.config import Settings, load_settings
from fruitstream.domain import ResultRow
from fruitstream.errors import FruitstreamError, ImageError
from fruitstream.i18n import fruit_name
from fruitstream.pipeline import SubmitReport, Upload
from fruitstream.ports import Health
from fruitstream.stats import SessionStats, session_stats

T = Callable[..., str]


@dataclass(frozen=True)
class PredictionView:
    headline: str
    known: bool
    bars: list[tuple[str, float]]  # (fruit name, confidence) for the top guesses
    elapsed_ms: float


@dataclass(frozen=True)
class ErrorView:
    message: str


class AppServices:
    """Everything the app needs, built once per server process (``st.cache_resource``)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.backends: Backends = build_backends(self.settings)
        self.classifier: Classifier = build_classifier(self.settings)
        self._worker_thread: threading.Thread | None = None
        self._stop = threading.Event()

    def warm_up(self) -> None:
        """Pay the one-time costs before the first user does: the first ONNX Runtime run, the
        image decoders, and the chart and table libraries Streamlit imports lazily (seconds on
        a small machine).
        """

        def work() -> None:
            import gc
            import importlib
            import io

            from PIL import Image

            # A real JPEG, so that Pillow's decoders load now and not on the first photo.
            photo = io.BytesIO()
            Image.new("RGB", (320, 240), (200, 120, 40)).save(photo, format="JPEG")
            self.classifier.classify(photo.getvalue())
            self.classifier.classify_many([photo.getvalue()])  # builds the batch lanes
            for module in ("pandas", "pyarrow", "altair"):
                importlib.import_module(module)
            # What is loaded now lives as long as the server: keep the collector off it.
            gc.freeze()

        threading.Thread(target=work, name="fruitstream-warm-up", daemon=True).start()

    def ensure_worker(self) -> None:
        """Embedded default: a worker thread in the app process consumes the local queue."""
        if self.settings.queue != "local":
            return
        if self._worker_thread is None or not self._worker_thread.is_alive():
            worker = self.backends.worker(self.classifier)
            self._worker_thread = threading.Thread(
                target=worker.run, args=(self._stop,), name="fruitstream-worker", daemon=True
            )
            self._worker_thread.start()

    # --- one photo ------------------------------------------------------------------------

    def classify_photo(self, name: str, data: bytes, t: T, lang: str) -> PredictionView | ErrorView:
        started = time.perf_counter()
        try:
            pred = self.classifier.classify(data, top_k=3)
        except ImageError as exc:
            return ErrorView(t("error.file", name=name, reason=str(exc)))
        return prediction_view(pred, t, lang, (time.perf_counter() - started) * 1000)

    # --- batches --------------------------------------------------------------------------

    def submit(self, files: Sequence[tuple[str, bytes]]) -> SubmitReport:
        self.ensure_worker()
        pipeline = self.backends.pipeline()
        return pipeline.submit([Upload(name, data) for name, data in files])

    def progress(self, session_id: str) -> tuple[int, int]:
        p = self.backends.db.progress(session_id)
        return p.done, p.submitted

    def wait(self, session_id: str, seconds: float) -> bool:
        """Wait up to ``seconds`` for the session to complete; True if it did."""
        deadline = time.monotonic() + seconds
        while True:
            done, total = self.progress(session_id)
            if done >= total or time.monotonic() >= deadline:
                return done >= total
            time.sleep(0.02)

    def results(self, session_id: str) -> list[ResultRow]:
        return self.backends.db.results(session_id)

    def sessions(self) -> list[tuple[str, str]]:
        """``(session_id, label)`` for the history list, newest first."""
        out = []
        for s in self.backends.db.sessions(limit=30):
            out.append(
                (
                    s.session_id,
                    f"{s.created_at:%Y-%m-%d %H:%M:%S} · {s.submitted} · {s.session_id[:8]}",
                )
            )
        return out

    def image(self, row: ResultRow) -> bytes | str | None:
        """A presigned URL where the store has one, else the bytes; None if gone."""
        url = self.backends.store.url(row.object_key) if row.object_key else None
        if url:
            return url
        try:
            return self.backends.store.get(row.object_key)
        except FruitstreamError:
            return None

    def health(self) -> list[Health]:
        return self.backends.health()


def prediction_view(pred: Prediction, t: T, lang: str, elapsed_ms: float = 0.0) -> PredictionView:
    name = fruit_name(pred.label, lang)
    if pred.known:
        headline = t("result.is", fruit=name)
    else:
        headline = t("result.unknown", fruit=name, pct=f"{pred.confidence:.0%}")
    bars = [(fruit_name(k.label, lang), k.confidence) for k in pred.top_k]
    return PredictionView(headline, pred.known, bars, elapsed_ms)


def health_line(h: Health) -> str:
    """Green or red state (Material icons: emoji need fonts a server may lack) and the reason."""
    icon = ":green[:material/check_circle:]" if h.ok else ":red[:material/error:]"
    return f"{icon} **{h.name}**: {h.detail}"


def health_figures(h: Health) -> list[str]:
    figures = {
        "rate": "{:.1f} photos/s",
        "lag": "lag {:,} messages",
        "input_rate": "input {:.1f} rows/s",
        "processed_rate": "processed {:.1f} rows/s",
    }
    extra = h.extra or {}
    return [fmt.format(extra[key]) for key, fmt in figures.items() if extra.get(key) is not None]


def table_rows(rows: Sequence[ResultRow], t: T, lang: str) -> list[dict[str, Any]]:
    return [
        {
            t("col.file"): r.filename,
            t("col.fruit"): fruit_name(r.label, lang) if r.label else "",
            t("col.confidence"): round(r.confidence, 4) if r.confidence is not None else None,
            t("col.known"): r.known,
            t("col.status"): r.status,
            t("col.error"): r.error or "",
        }
        for r in rows
    ]


def caption(row: ResultRow, t: T, lang: str) -> str:
    if row.status == "error":
        return f"{row.filename}: {row.error}"
    name = fruit_name(row.label or "", lang)
    if not row.known:
        name = f"{t('unknown')} ({name})"
    return f"{name} {row.confidence or 0:.0%}"


def stats(rows: Sequence[ResultRow], lang: str) -> tuple[SessionStats, dict[str, int]]:
    s = session_stats(rows)
    return s, {fruit_name(k, lang): v for k, v in s.per_label.items()}
