"""What the app shows, computed without Streamlit: predictions, tables, grids, health."""

from __future__ import annotations

import functools
import io
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fruitstream.config import Settings, load_settings
from fruitstream.core.imaging import decode_image
from fruitstream.domain import FRUITS15, NOT_FRUIT, Prediction, ResultRow, Status
from fruitstream.errors import FruitstreamError, ImageError
from fruitstream.i18n import fruit_name
from fruitstream.pipeline import BinaryFile, OpenFile, SubmitReport, Upload
from fruitstream.ports import Health, PhotoClassifier
from fruitstream.service import FruitService
from fruitstream.stats import SessionStats, session_stats

T = Callable[..., str]
# Pixels on the long side of a grid picture.
THUMBNAIL_SIDE = 320


@dataclass(frozen=True)
class PredictionView:
    headline: str
    known: bool
    bars: list[tuple[str, float]]  # (fruit name, confidence) for the top guesses
    elapsed_ms: float
    # The top guesses as labels (the pick-list a person taps to correct or confirm).
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class ErrorView:
    message: str


class UploadedPhoto(BinaryFile, Protocol):
    """What Streamlit's uploader gives for a file (a ``BytesIO`` with a name and a size)."""

    name: str
    size: int

    def getvalue(self) -> bytes: ...


class AppServices:
    """What the app needs, built once per server process (``st.cache_resource``): the
    application service, and the presentation of its answers."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.service = FruitService.create(settings or load_settings())
        self.settings = self.service.settings

    @property
    def classifier(self) -> PhotoClassifier:
        return self.service.classifier

    def warm_up(self) -> None:
        """Pay the one-time costs before the first user does: the first ONNX Runtime run, the
        image decoders, and the chart and table libraries Streamlit imports lazily (seconds on
        a small machine).
        """

        def work() -> None:
            import gc
            import importlib

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
        """Embedded default: a worker thread in the app process classifies the local queue."""
        self.service.ensure_worker()

    # --- one photo ------------------------------------------------------------------------

    def classify_photo(self, name: str, data: bytes, t: T, lang: str) -> PredictionView | ErrorView:
        started = time.perf_counter()
        try:
            pred = self.service.classify_one(data)
        except ImageError as exc:
            return ErrorView(error_line(name, str(exc), t))
        return prediction_view(pred, t, lang, (time.perf_counter() - started) * 1000)

    def label_photo(self, name: str, data: bytes, label: str, t: T, lang: str) -> str | ErrorView:
        """Keep what a person tapped for a photo; the thanks to show, or why it was refused."""
        try:
            made = self.service.label(label, data=data, source="app", filename=name)
        except FruitstreamError as exc:
            return ErrorView(error_line(name, str(exc), t))
        return t("label.saved", fruit=label_name(made.label, t, lang))

    def label_row(self, row: ResultRow, label: str, t: T, lang: str) -> str | ErrorView:
        """Keep a person's correction of a batch photo (by its result row)."""
        try:
            made = self.service.label(label, image_id=row.image_id, source="app")
        except FruitstreamError as exc:
            return ErrorView(error_line(row.filename, str(exc), t))
        return t("label.saved", fruit=label_name(made.label, t, lang))

    # --- batches --------------------------------------------------------------------------

    def submit(self, files: Sequence[UploadedPhoto]) -> SubmitReport:
        """A batch of uploaded files, each read only when ``submit`` stores it (no second
        copy of the whole batch in memory)."""
        return self.service.submit([Upload(f.name, OpenFile(f, f.size)) for f in files])

    def progress(self, session_id: str) -> tuple[int, int]:
        p = self.service.progress(session_id)
        return p.done, p.submitted

    def wait(self, session_id: str, seconds: float) -> bool:
        """Wait up to ``seconds`` for the session to complete; True if it did."""
        return self.service.wait(session_id, timeout=seconds, poll=0.02).complete

    def results(self, session_id: str) -> list[ResultRow]:
        return self.service.results(session_id)

    def sessions(self) -> list[tuple[str, str]]:
        """``(session_id, label)`` for the history list, newest first."""
        return [
            (
                s.session.session_id,
                f"{s.session.created_at:%Y-%m-%d %H:%M:%S} · {s.session.submitted}"
                f" · {s.session.session_id[:8]}",
            )
            for s in self.service.sessions(limit=30)
        ]

    def image(self, row: ResultRow) -> bytes | None:
        """A thumbnail of the photo (kept for the next rerun), or None if it is gone."""
        if not row.object_key:
            return None
        return self._thumbnail(row.object_key)

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one AppServices per server process
    def _thumbnail(self, key: str) -> bytes | None:
        try:
            return thumbnail(self.service.photo(key))
        except FruitstreamError:
            return None

    def health(self) -> list[Health]:
        return self.service.health()


_MARKDOWN = re.compile(r"([\\`*_\[\]<>#|~$:!{}])")


def escape_markdown(text: str) -> str:
    """User text (a file name, a reason quoting it) shown literally by ``st.error``/``markdown``:
    no links, emphasis, colour directives or HTML from a crafted name."""
    escaped = _MARKDOWN.sub(r"\\\1", text)
    return "\\" + escaped if escaped[:1] in {"-", "+", "="} else escaped


def thumbnail(data: bytes, side: int = THUMBNAIL_SIDE) -> bytes | None:
    """A small JPEG of any photo the classifier can read (16-bit, float and CMYK modes too),
    so that the grid never depends on what a browser can draw, and holds kilobytes a photo."""
    try:
        img = decode_image(data, draft_size=side)
        img.thumbnail((side, side))
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=85)
    except Exception:
        return None
    return out.getvalue()


def prediction_view(pred: Prediction, t: T, lang: str, elapsed_ms: float = 0.0) -> PredictionView:
    name = fruit_name(pred.label, lang)
    if pred.known:
        headline = t("result.is", fruit=name)
    else:
        headline = t("result.unknown", fruit=name, pct=f"{pred.confidence:.0%}")
    bars = [(fruit_name(k.label, lang), k.confidence) for k in pred.top_k]
    choices = tuple(k.label for k in pred.top_k)
    return PredictionView(headline, pred.known, bars, elapsed_ms, choices)


def health_line(h: Health) -> str:
    """Green or red state (Material icons: emoji need fonts a server may lack) and the reason."""
    icon = ":green[:material/check_circle:]" if h.ok else ":red[:material/error:]"
    return f"{icon} **{h.name}**: {h.detail}"


def health_figures(h: Health) -> list[str]:
    return list(h.figures)


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


def error_line(name: str, reason: str, t: T) -> str:
    """``name: reason`` for ``st.error``, both escaped for Markdown."""
    return t("error.file", name=escape_markdown(name), reason=escape_markdown(reason))


def caption(row: ResultRow, t: T, lang: str) -> str:
    if row.status == Status.ERROR:
        return f"{row.filename}: {row.error}"
    name = fruit_name(row.label or "", lang)
    if not row.known:
        name = f"{t('unknown')} ({name})"
    return f"{name} {row.confidence or 0:.0%}"


def stats(rows: Sequence[ResultRow], lang: str) -> tuple[SessionStats, dict[str, int]]:
    s = session_stats(rows)
    return s, {fruit_name(k, lang): v for k, v in s.per_label.items()}


def label_name(label: str, t: T, lang: str) -> str:
    """A label as the person reads it: the fruit's name in their language, "not a fruit"."""
    return t("label.not_fruit") if label == NOT_FRUIT else fruit_name(label, lang)


def label_choices(labels: Sequence[str] = FRUITS15) -> list[str]:
    """What "something else" offers: every fruit the live model knows (fruits taught since
    included), then "not a fruit"."""
    return [*labels, NOT_FRUIT]
