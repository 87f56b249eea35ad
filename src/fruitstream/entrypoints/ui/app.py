"""The Streamlit app: three tabs (upload, camera, batch) and a status sidebar; drawing only."""

from __future__ import annotations

import logging
import uuid
from datetime import tzinfo
from typing import Any

import streamlit as st

from fruitstream.domain import ResultRow, Status
from fruitstream.entrypoints.ui.page import BROWSER_COOKIE, LANG_COOKIE, STYLE, page_script
from fruitstream.entrypoints.ui.views import (
    SHOWN_SIDE,
    AppServices,
    ErrorView,
    PredictionView,
    T,
    batch_name,
    caption,
    error_line,
    escape_markdown,
    guesses_html,
    health_figures,
    health_line,
    health_summary,
    label_choices,
    label_name,
    share_card,
    share_json,
    stats,
    table_rows,
    thumbnail,
)
from fruitstream.errors import FruitstreamError
from fruitstream.i18n import LANGUAGES, fruit_name, translator
from fruitstream.ports import Health
from fruitstream.stats import csv_bytes

POLL_SECONDS = 0.5
HEALTH_SECONDS = 5.0
SHORT_WAIT_SECONDS = 1.5
GRID_COLUMNS = 5
GRID_PAGE = 20
PRELOAD_KEY = "preload"
log = logging.getLogger("fruitstream.ui")


@st.cache_resource(show_spinner=False)
def services() -> AppServices:
    """Built once per server process: settings, adapters, the model, the worker thread."""
    svc = AppServices()
    svc.start()
    svc.warm_up()
    return svc


def prediction_ui(view: PredictionView | ErrorView, t: T, key: str) -> PredictionView | ErrorView:
    # A keyed container: the page's script moves focus to a new answer inside it.
    with st.container(key=f"{key}-answer"):
        if isinstance(view, ErrorView):
            st.error(view.message)
            return view
        if view.known:
            st.success(view.headline)
        else:
            st.warning(view.headline)
    st.html(guesses_html(view, t))
    st.caption(t("result.time", ms=view.elapsed_ms))
    return view


def correction_ui(
    name: str, data: bytes, view: PredictionView, svc: AppServices, t: T, lang: str, key: str
) -> str | None:
    """One tap on the right fruit keeps it as the photo's label; returns the label kept."""
    st.caption(t("label.ask") if view.known else t("label.unsure"))
    picked: str | None = None
    columns = st.columns(len(view.choices) + 1)
    for i, (column, choice) in enumerate(zip(columns, view.choices, strict=False)):
        mark = " ✓" if i == 0 and view.known else ""
        if column.button(f"{fruit_name(choice, lang)}{mark}", key=f"{key}-pick-{choice}"):
            picked = choice
    with columns[-1].popover(t("label.other")):
        known = st.selectbox(
            t("label.fruit"),
            label_choices(svc.classifier.bundle.labels),
            index=None,
            format_func=lambda x: label_name(x, t, lang),
            key=f"{key}-other",
        )
        new = st.text_input(t("label.new"), key=f"{key}-new")
        if st.button(t("label.save"), key=f"{key}-save"):
            picked = new.strip() or known
    if not picked:
        return None
    answer = svc.label_photo(name, data, picked, t, lang)
    if isinstance(answer, ErrorView):
        st.error(answer.message)
        return None
    st.success(answer)
    return picked


def photo_ui(
    name: str, data: bytes, svc: AppServices, t: T, lang: str, key: str, show: bool = True
) -> Any:
    """The answer, the fruits to tap, then the photo (``show``: the camera shows its own)."""
    # The answer's column comes first: on a phone the columns stack, and the answer (with the
    # fruits to tap) is then above the photo, in sight without scrolling.
    answer, picture = st.columns([1, 1])
    view = svc.classify_photo(name, data, t, lang)
    # The answer goes out first; the photo's own processing and download come after it.
    with answer:
        prediction_ui(view, t, key)
        if isinstance(view, PredictionView):
            correction_ui(name, data, view, svc, t, lang, key)
            share_ui(name, data, view, svc, t, key)
    if isinstance(view, PredictionView):
        if show:
            with picture:
                st.image(thumbnail(data, SHOWN_SIDE) or data, width="stretch",
                         alt=t("result.alt", name=name))  # fmt: skip
        remember_photo(name, data, view, svc, key)
    return view


def share_ui(
    name: str, data: bytes, view: PredictionView, svc: AppServices, t: T, key: str
) -> None:
    """The answer to keep or send on: a small card image, or the figures as JSON."""
    stem = name.rsplit(".", 1)[0] or "photo"
    card, record = st.columns(2)
    card.download_button(
        t("share.card"), lambda: share_card(data, view, t), file_name=f"{stem}-fruitstream.png",
        mime="image/png", key=f"{key}-share-card", on_click="ignore", icon=":material/image:",
    )  # fmt: skip
    record.download_button(
        t("share.json"), share_json(name, view, svc.classifier.bundle.model_version),
        file_name=f"{stem}-fruitstream.json", mime="application/json", key=f"{key}-share-json",
        on_click="ignore", icon=":material/data_object:",
    )  # fmt: skip


def remember_photo(
    name: str, data: bytes, view: PredictionView, svc: AppServices, key: str
) -> None:
    """A single photo joins this browser's history once (reruns of the tab keep it once); the
    batch tab's list, outside this tab's fragment, is then drawn again to show it."""
    seen = st.session_state.setdefault("kept-photos", set())
    mark = (key, name, len(data), hash(data))
    if mark in seen:
        return
    seen.add(mark)
    if svc.keep_photo(name, data, view, owner()) is not None:
        st.rerun(scope="app")


@st.fragment
def upload_ui(svc: AppServices, t: T, lang: str) -> Any:
    file = st.file_uploader(t("upload.label"), key="upload", type=None)
    if file is None:
        return None
    return photo_ui(file.name, file.getvalue(), svc, t, lang, "upload")


@st.fragment
def camera_ui(svc: AppServices, t: T, lang: str) -> Any:
    # Beside the answer on a wide screen (so that its button is in sight), above it on a phone.
    lens, answer = st.columns([1, 1])
    with lens:
        shot = st.camera_input(t("camera.label"), key="camera")
    if shot is None:
        return None
    with answer:  # the frame is already in sight in the camera's own box: not shown again
        return photo_ui(shot.name, shot.getvalue(), svc, t, lang, "camera", show=False)


def batch_ui(svc: AppServices, t: T, lang: str) -> str | None:
    mine = owner()
    with st.form("batch", clear_on_submit=True):
        files = st.file_uploader(t("batch.label"), accept_multiple_files=True, key="batch_files")
        typed = st.text_input(t("batch.name"), key="batch_name", max_chars=200)
        pressed = st.form_submit_button(t("batch.submit"))
    if pressed:
        if not files:
            st.warning(t("batch.none"))
        else:
            report = svc.submit(files, name=batch_name(typed, files, t), owner=mine)
            # A small batch is done within moments: show it in this run, no polling round trip.
            svc.wait(report.session_id, mine, SHORT_WAIT_SECONDS)
            # The history list below follows: it opens on the batch just sent.
            st.session_state["history"] = report.session_id
            st.session_state["rejected"] = {**report.rejected, **report.not_sent}
    history = svc.sessions(mine, t, browser_tz())
    if not history:
        return None
    labels = dict(history)
    if st.session_state.get("history") not in labels:
        st.session_state["history"] = history[0][0]
    session_id: str = st.selectbox(
        t("batch.history"),
        list(labels),
        format_func=labels.__getitem__,
        key="history",
        on_change=lambda: st.session_state.update(rejected={}),
    )
    st.subheader(t("batch.session", sid=svc.session_name(session_id, mine, t)), anchor=False)
    for name, reason in st.session_state.get("rejected", {}).items():
        st.error(error_line(name, reason, t))
    done, total = svc.progress(session_id, mine)
    if done < total:
        progress_ui(session_id, svc, t)
    else:
        results_ui(session_id, svc, t, lang)
    return session_id


@st.fragment(run_every=POLL_SECONDS)
def progress_ui(session_id: str, svc: AppServices, t: T) -> None:
    """Polls without freezing the page; reruns the app once the session is complete."""
    try:
        done, total = svc.progress(session_id, owner())
    except FruitstreamError as exc:
        st.error(t("error.backend", reason=escape_markdown(str(exc))))
        return
    st.progress(done / total if total else 1.0, text=t("batch.progress", done=done, total=total))
    if done == 0:
        st.caption(t("batch.waiting", total=total))
    if done >= total:
        st.rerun(scope="app")


def results_ui(session_id: str, svc: AppServices, t: T, lang: str) -> None:
    rows = svc.results(session_id, owner())
    summary, per_answer = stats(rows, t, lang)
    st.subheader(t("batch.stats"), anchor=False)
    with st.container(key="stats"):  # on a phone: three to a row, not five stacked
        cols = st.columns(5)
        cols[0].metric(t("stats.count"), summary.total)
        mean = summary.mean_confidence
        cols[1].metric(t("stats.mean"), "-" if mean is None else f"{mean:.1%}")
        cols[2].metric(t("stats.unknown"), summary.unknown)
        cols[3].metric(t("stats.errors"), summary.errors)
        seconds = summary.seconds
        cols[4].metric(t("stats.time"), "-" if seconds is None else f"{seconds:.1f} s")
    if per_answer:
        st.caption(t("stats.per_fruit"))
        st.bar_chart(per_answer, horizontal=True)
    for row in rows:
        if row.status == Status.ERROR:
            st.error(error_line(row.filename, row.error or "", t))
    st.subheader(t("batch.table"), anchor=False)
    st.dataframe(
        table_rows(rows, t, lang),
        width="stretch",
        hide_index=True,
        column_config={t("col.confidence"): st.column_config.NumberColumn(format="percent")},
    )
    st.download_button(
        t("batch.download"), csv_bytes(rows), file_name=f"fruitstream-{session_id}.csv",
        mime="text/csv",
    )  # fmt: skip
    st.subheader(t("batch.grid"), anchor=False)
    grid = [r for r in rows if r.status == Status.OK]
    pages = max(1, -(-len(grid) // GRID_PAGE))
    page = 1
    if pages > 1:  # a page of pictures at a time: memory and requests stay bounded
        page = int(st.number_input(t("batch.page", pages=pages), 1, pages, 1, key="grid_page"))
    shown = grid[(page - 1) * GRID_PAGE : page * GRID_PAGE]
    # A keyed block: on a phone its columns wrap three to a row instead of stacking.
    with st.container(key="grid"):
        for start in range(0, len(shown), GRID_COLUMNS):
            for col, row in zip(
                st.columns(GRID_COLUMNS), shown[start : start + GRID_COLUMNS], strict=False
            ):
                image = svc.image(row)
                text = caption(row, t, lang)
                if image is not None:
                    col.image(image, caption=text, width="stretch", alt=f"{row.filename}: {text}")
                # Each tile's own control: it picks this photo in the correction form below.
                if col.button(t("label.tile"), key=f"tile-{row.image_id}"):
                    st.session_state["correct-photo"] = row.image_id
    batch_correction_ui(grid, svc, t, lang)


def batch_correction_ui(rows: list[ResultRow], svc: AppServices, t: T, lang: str) -> str | None:
    """Any photo of the batch corrected (or confirmed): pick it, say what it is."""
    if not rows:
        return None
    by_id = {r.image_id: r for r in rows}
    with st.form("correct", clear_on_submit=True):
        st.subheader(t("label.correct"), anchor=False)
        chosen = st.selectbox(
            t("label.photo"),
            list(by_id),
            format_func=lambda i: f"{by_id[i].filename}: {caption(by_id[i], t, lang)}",
            key="correct-photo",
        )
        known = st.selectbox(
            t("label.fruit"),
            label_choices(svc.classifier.bundle.labels),
            index=None,
            format_func=lambda x: label_name(x, t, lang),
            key="correct-fruit",
        )
        new = st.text_input(t("label.new"), key="correct-new")
        pressed = st.form_submit_button(t("label.save"))
    picked = new.strip() or known
    if not pressed or not picked or chosen is None:
        return None
    answer = svc.label_row(by_id[chosen], picked, t, lang)
    if isinstance(answer, ErrorView):
        st.error(answer.message)
        return None
    st.success(answer)
    return picked


@st.fragment(run_every=HEALTH_SECONDS)
def health_ui(svc: AppServices, t: T) -> list[Health]:
    """One line for the people using the app, the details for operators behind an expander;
    refreshed on their own so that they never hold up a photo."""
    st.header(t("sidebar.health"), anchor=False)
    try:
        checks = svc.health()
    except FruitstreamError as exc:
        st.error(str(exc))
        return []
    ok, line = health_summary(checks, t)
    if ok:
        st.success(line, icon=":material/check_circle:")
    else:
        st.error(line, icon=":material/error:")
    with st.expander(t("health.details")):
        for h in checks:
            st.markdown(health_line(h))
            for figure in health_figures(h):
                st.caption(figure)
    return checks


def sidebar_ui(svc: AppServices, t: T, lang: str) -> None:
    with st.sidebar:
        health_ui(svc, t)
        bundle = svc.classifier.bundle
        st.header(t("sidebar.model"), anchor=False)
        adapted = f" + {bundle.adapted}" if bundle.adapted else ""
        st.markdown(f"`{bundle.name}` v{bundle.version}{adapted}")
        st.caption(t("sidebar.classes", n=len(bundle.labels)))
        st.caption(", ".join(fruit_name(label, lang) for label in bundle.labels))


def language_ui() -> str:
    """The language switch, in the header bar: as the address asks (``?lang=es``), else as
    this browser last chose (its cookie), else the browser's own language. Its label, read by
    screen readers only, is in both: it is how one finds the other."""
    if st.session_state.get("lang") not in LANGUAGES:
        asked = st.query_params.get("lang")
        remembered = st.context.cookies.get(LANG_COOKIE)
        locale = (st.context.locale or "").split("-")[0]
        st.session_state["lang"] = next(
            (x for x in (asked, remembered, locale) if x in LANGUAGES), "en"
        )
    with st.container(key="language"):
        lang = st.segmented_control(
            "Language / Idioma", list(LANGUAGES), required=True, key="lang",
            format_func=LANGUAGES.__getitem__, label_visibility="collapsed",
        )  # fmt: skip
    lang = lang if lang in LANGUAGES else "en"
    st.query_params["lang"] = lang  # a reload, or the address shared, keeps the language
    return lang


def browser_id() -> str:
    """This browser's id (its cookie; a new one on a first visit)."""
    if "browser" not in st.session_state:
        known = st.context.cookies.get(BROWSER_COOKIE, "")
        fresh = len(known) == 32 and all(c in "0123456789abcdef" for c in known)
        st.session_state["browser"] = known if fresh else uuid.uuid4().hex
    return str(st.session_state["browser"])


def owner() -> str:
    """Whose the sessions this browser submits are: its history is its own."""
    return f"browser:{browser_id()}"


def browser_tz() -> tzinfo | None:
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(st.context.timezone) if st.context.timezone else None
    except (ValueError, KeyError):
        return None


@st.cache_data(show_spinner=False)
def _blank_png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (1, 1), "white").save(out, format="PNG")
    return out.getvalue()


def preload_ui() -> None:
    """One of each element a batch result shows, mounted out of sight at page open.

    The browser fetches and compiles each kind's code the first time one is drawn: on a
    two-core machine about half a second for the metrics, the table, the chart, the images.
    Paid here, while nobody waits, the first batch's results then appear at once.
    """
    with st.container(key=PRELOAD_KEY):
        st.html(f"<style>.st-key-{PRELOAD_KEY} {{display: none}}</style>")
        st.metric("-", 0)
        st.image(_blank_png())
        st.dataframe([{"-": 0}], hide_index=True)
        st.bar_chart({"-": [0]}, horizontal=True)
        st.download_button("-", b"", file_name="-.csv", mime="text/csv")


def main() -> None:
    st.set_page_config(page_title="fruitstream", page_icon="🍎", layout="wide")
    lang = language_ui()
    t = translator(lang)
    st.html(STYLE)
    st.html(page_script(lang, browser_id()), unsafe_allow_javascript=True)
    # Whatever goes wrong: one sentence on the page, the traceback in the server's log only.
    try:
        tabs_ui(services(), t, lang)
    except FruitstreamError as exc:  # the model cannot be loaded, a setting is wrong...
        log.exception("the app cannot start")
        st.error(t("error.start", reason=escape_markdown(str(exc))))
    except Exception:
        log.exception("the page failed")
        st.error(t("error.unexpected"))


def tabs_ui(svc: AppServices, t: T, lang: str) -> None:
    sidebar_ui(svc, t, lang)
    st.title(t("title"), anchor=False)
    upload_tab, camera_tab, batch_tab = st.tabs([t("tab.upload"), t("tab.camera"), t("tab.batch")])
    with upload_tab:
        upload_ui(svc, t, lang)
    with camera_tab:
        camera_ui(svc, t, lang)
    with batch_tab:
        try:
            batch_ui(svc, t, lang)
        except FruitstreamError as exc:  # a backend is down: say so, the other tabs go on
            st.error(t("error.backend", reason=escape_markdown(str(exc))))
    preload_ui()


if __name__ == "__main__":
    main()
