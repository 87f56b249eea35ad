"""What the app shows, computed without Streamlit: predictions, tables, grids, health."""

from __future__ import annotations

import functools
import html
import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Literal, Protocol

from fruitstream.bootstrap import build_service
from fruitstream.config import Settings, load_settings
from fruitstream.core.imaging import decode_image
from fruitstream.domain import NOT_FRUIT, Caller, Prediction, ResultRow, Status
from fruitstream.errors import FruitstreamError, ImageError
from fruitstream.i18n import fruit_name
from fruitstream.pipeline import BinaryFile, OpenFile, SubmitReport, Upload
from fruitstream.ports import Health, PhotoClassifier
from fruitstream.service import SessionSummary
from fruitstream.stats import SessionStats, session_stats

T = Callable[..., str]
# Pixels on the long side of a grid picture, and of the photo shown beside its answer (a
# phone's screen is about 1,200 device pixels wide; a 12 MP photo would be megabytes).
THUMBNAIL_SIDE = 320
SHOWN_SIDE = 1200
# An unknown answer whose two first fruits still hold this much of the probability is a close
# call between fruits ("apple or mango?"), not a photo of none of them.
CLOSE_CALL_SHARE = 0.5
# Under this, the second fruit of a close call is no real contender: "maybe apple?".
SECOND_GUESS = 0.15
Kind = Literal["known", "close", "unknown"]


@dataclass(frozen=True)
class PredictionView:
    headline: str
    known: bool
    bars: list[tuple[str, float]]  # (fruit name, confidence) for the top guesses
    elapsed_ms: float
    # The top guesses as labels (the pick-list a person taps to correct or confirm).
    choices: tuple[str, ...] = ()
    kind: Kind = "known"
    prediction: Prediction | None = None


@dataclass(frozen=True)
class ErrorView:
    message: str


class UploadedPhoto(BinaryFile, Protocol):
    """What Streamlit's uploader gives for a file (a ``BytesIO`` with a name and a size)."""

    name: str
    size: int

    def getvalue(self) -> bytes: ...


log = logging.getLogger(__name__)


class AppServices:
    """What the app needs, built once per server process (``st.cache_resource``): the
    application service, and the presentation of its answers."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.service = build_service(settings or load_settings())
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

    def start(self) -> None:
        """The app's process begins serving: its worker, as the service's policy says (the
        embedded default: a worker thread here classifies the local queue)."""
        self.service.start()

    # --- one photo ------------------------------------------------------------------------

    def classify_photo(self, name: str, data: bytes, t: T, lang: str) -> PredictionView | ErrorView:
        started = time.perf_counter()
        try:
            pred = self.service.classify_one(data)
        except ImageError as exc:
            return ErrorView(error_line(name, str(exc), t))
        elapsed_ms = (time.perf_counter() - started) * 1000
        fruits = len(self.service.classifier.bundle.labels)
        return prediction_view(pred, t, lang, elapsed_ms, fruits=fruits)

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

    def keep_photo(self, name: str, data: bytes, view: PredictionView, owner: str) -> str | None:
        """A single photo's answer kept in the owner's history; None (and a log line) when a
        backend cannot keep it: the answer is shown all the same."""
        if view.prediction is None:
            return None
        try:
            return self.service.keep(name, data, view.prediction, caller=Caller(owner))
        except FruitstreamError as exc:
            log.warning("a single photo was not kept in the history: %s", exc)
            return None

    def submit(
        self, files: Sequence[UploadedPhoto], name: str = "", owner: str = ""
    ) -> SubmitReport:
        """A batch of uploaded files, each read only when ``submit`` stores it (no second
        copy of the whole batch in memory)."""
        uploads = [Upload(f.name, OpenFile(f, f.size)) for f in files]
        return self.service.submit(uploads, name=name, caller=Caller(owner))

    def progress(self, session_id: str, owner: str) -> tuple[int, int]:
        p = self.service.progress(session_id, caller=Caller(owner))
        return p.done, p.submitted

    def wait(self, session_id: str, owner: str, seconds: float) -> bool:
        """Wait up to ``seconds`` for the session to complete; True if it did."""
        return self.service.wait(session_id, seconds, 0.02, caller=Caller(owner)).complete

    def results(self, session_id: str, owner: str) -> list[ResultRow]:
        return self.service.results(session_id, caller=Caller(owner))

    def sessions(self, owner: str, t: T, tz: tzinfo | None = None) -> list[tuple[str, str]]:
        """``(session_id, label)`` of the owner's batches and single photos, newest first."""
        return [
            (s.session.session_id, session_label(s, t, tz))
            for s in self.service.sessions(limit=30, caller=Caller(owner))
        ]

    def session_name(self, session_id: str, owner: str, t: T) -> str:
        """What the batch is called, for its heading (``NotFoundError`` if not the owner's)."""
        found = self.service.session(session_id, caller=Caller(owner))
        return found.name or t("batch.unnamed", n=found.submitted)

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


def answer_kind(pred: Prediction) -> Kind:
    """Known; a close call between known fruits; or none of them."""
    if pred.known:
        return "known"
    share = sum(k.confidence for k in pred.top_k[:2])
    return "close" if share >= CLOSE_CALL_SHARE else "unknown"


def prediction_view(
    pred: Prediction, t: T, lang: str, elapsed_ms: float = 0.0, *, fruits: int
) -> PredictionView:
    """How the app says ``pred``; ``fruits``: how many fruits the model answering knows."""
    name = fruit_name(pred.label, lang)
    kind = answer_kind(pred)
    if kind == "known":
        headline = t("result.is", fruit=name)
    elif kind == "close" and len(pred.top_k) > 1 and pred.top_k[1].confidence >= SECOND_GUESS:
        headline = t("result.or", fruit=name, other=fruit_name(pred.top_k[1].label, lang))
    elif kind == "close":
        headline = t("result.maybe", fruit=name)
    else:
        headline = t("result.unknown", n=fruits, fruit=name, pct=f"{pred.confidence:.0%}")
    bars = [(fruit_name(k.label, lang), k.confidence) for k in pred.top_k]
    choices = tuple(k.label for k in pred.top_k)
    return PredictionView(headline, pred.known, bars, elapsed_ms, choices, kind, pred)


def guesses_html(view: PredictionView, t: T) -> str:
    """The top guesses as text a screen reader reads as written ("banana: 99.9%"), each with a
    bar drawn for the eye only; an unknown's small figures explained."""
    title = t("result.top") if view.kind != "unknown" else t("result.top_unknown")
    items = "".join(
        f'<li><span class="fs-guess">{html.escape(name)}: {confidence:.1%}</span>'
        f'<span class="fs-bar" aria-hidden="true">'
        f'<span style="width: {_unit(confidence) * 100:.1f}%"></span></span></li>'
        for name, confidence in view.bars
    )
    return f'<div class="fs-guesses"><p>{html.escape(title)}</p><ul>{items}</ul></div>'


def share_json(name: str, view: PredictionView, model: str) -> bytes:
    """One answer as JSON, to save or send on."""
    pred = view.prediction
    record = {
        "file": name,
        "answer": view.headline,
        **(pred.to_dict() if pred is not None else {}),
        "model": model,
        "classified_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    return json.dumps(record, ensure_ascii=False, indent=2).encode("utf-8")


def share_card(data: bytes, view: PredictionView, t: T) -> bytes:
    """One answer as a small PNG card: the photo, the answer, the top guesses."""
    from PIL import Image, ImageDraw, ImageFont

    card = Image.new("RGB", (720, 360), "white")
    try:
        photo = decode_image(data, draft_size=320)
        photo.thumbnail((320, 320))
        card.paste(photo, (20 + (320 - photo.width) // 2, 20 + (320 - photo.height) // 2))
    except Exception:  # the card is still worth having without its photo
        pass
    draw = ImageDraw.Draw(card)
    big, small = ImageFont.load_default(28), ImageFont.load_default(20)
    colour = {"known": (27, 94, 32), "close": (130, 80, 0), "unknown": (130, 80, 0)}[view.kind]
    y = 30
    for line in _wrap(view.headline, 24):
        draw.text((370, y), line, fill=colour, font=big)
        y += 36
    y += 12
    draw.text((370, y), t("result.top"), fill=(60, 60, 60), font=small)
    y += 30
    for name, confidence in view.bars:
        draw.text((370, y), f"{name}: {confidence:.1%}", fill=(30, 30, 30), font=small)
        draw.rectangle((370, y + 26, 370 + int(320 * _unit(confidence)), y + 30),
                       fill=(46, 125, 50))  # fmt: skip
        y += 40
    draw.text((370, 325), "fruitstream", fill=(90, 90, 90), font=small)
    out = io.BytesIO()
    card.save(out, format="PNG")
    return out.getvalue()


def _unit(x: float) -> float:
    """``x`` within [0, 1]: a bar's length."""
    return max(0.0, min(1.0, x))


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines[:3]


def session_label(s: SessionSummary, t: T, tz: tzinfo | None = None) -> str:
    """A history entry: its name, when, how many photos."""
    record = s.session
    name = record.name or t("batch.unnamed", n=record.submitted)
    when = record.created_at.astimezone(tz) if tz else record.created_at
    count = t("batch.photo_count", n=record.submitted) if record.submitted != 1 else t("batch.one")
    return f"{name} · {when:%Y-%m-%d %H:%M} · {count}"


def batch_name(typed: str, files: Sequence[UploadedPhoto], t: T) -> str:
    """The name a person typed, else one made from the files ("kiwi.jpg and 9 more")."""
    if typed.strip():
        return typed.strip()
    if not files:
        return ""
    if len(files) == 1:
        return files[0].name
    return t("batch.auto_name", first=files[0].name, more=len(files) - 1)


def health_line(h: Health) -> str:
    """Green or red state (Material icons: emoji need fonts a server may lack) and the reason."""
    icon = ":green[:material/check_circle:]" if h.ok else ":red[:material/error:]"
    return f"{icon} **{h.name}**: {h.detail}"


def health_figures(h: Health) -> list[str]:
    return list(h.figures)


def health_summary(checks: Sequence[Health], t: T) -> tuple[bool, str]:
    """One line for the people using the app: all is well, or which part is not working."""
    down = [h for h in checks if not h.ok]
    if not down:
        return True, t("health.ok")
    return False, t("health.down", parts=", ".join(t(f"part.{h.name}") for h in down))


def table_rows(rows: Sequence[ResultRow], t: T, lang: str) -> list[dict[str, Any]]:
    """One row a photo; the confidence as a fraction the table shows as a percentage."""
    return [
        {
            t("col.file"): r.filename,
            t("col.fruit"): answer_text(r, t, lang),
            t("col.confidence"): r.confidence if r.status != Status.ERROR else None,
            t("col.error"): r.error or "",
        }
        for r in rows
    ]


def answer_text(row: ResultRow, t: T, lang: str) -> str:
    """What the model said of a batch photo, in words: "banana", "unknown (closest: cherry)"."""
    if row.status == Status.ERROR:
        return t("col.failed")
    name = fruit_name(row.label or "", lang)
    return name if row.known else t("caption.unknown", fruit=name)


def error_line(name: str, reason: str, t: T) -> str:
    """``name: reason`` for ``st.error``, both escaped for Markdown."""
    return t("error.file", name=escape_markdown(name), reason=escape_markdown(reason))


def caption(row: ResultRow, t: T, lang: str) -> str:
    if row.status == Status.ERROR:
        return f"{row.filename}: {row.error}"
    if not row.known:  # its percentage is of a fruit it is not: left out
        return answer_text(row, t, lang)
    return f"{answer_text(row, t, lang)} {row.confidence or 0:.0%}"


def stats(rows: Sequence[ResultRow], t: T, lang: str) -> tuple[SessionStats, dict[str, int]]:
    """The summary, and photos per answer for the chart: each fruit, unknowns and errors."""
    s = session_stats(rows)
    per_answer = {fruit_name(k, lang): v for k, v in s.per_label.items()}
    if s.unknown:
        per_answer[t("unknown")] = s.unknown
    if s.errors:
        per_answer[t("stats.errors")] = s.errors
    return s, per_answer


def label_name(label: str, t: T, lang: str) -> str:
    """A label as the person reads it: the fruit's name in their language, "not a fruit"."""
    return t("label.not_fruit") if label == NOT_FRUIT else fruit_name(label, lang)


def label_choices(labels: Sequence[str]) -> list[str]:
    """What "something else" offers: every fruit the live model knows (fruits taught since
    included), then "not a fruit"."""
    return [*labels, NOT_FRUIT]
