"""The Streamlit app: three tabs (upload, camera, batch) and a status sidebar; drawing only."""

from __future__ import annotations

from typing import Any

import streamlit as st

from fruitstream.domain import ResultRow, Status
from fruitstream.entrypoints.ui.views import (
    AppServices,
    ErrorView,
    PredictionView,
    T,
    caption,
    error_line,
    escape_markdown,
    health_figures,
    health_line,
    label_choices,
    label_name,
    stats,
    table_rows,
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
# The fruits to tap under an answer: at least 44 px high and as wide as their column (a
# finger's size, WCAG 2.5.5).
TAP_TARGETS = (
    "<style>[class*='st-key-upload-pick-'] button, [class*='st-key-camera-pick-'] button"
    " {min-height: 44px; width: 100%}</style>"
)


@st.cache_resource(show_spinner=False)
def services() -> AppServices:
    """Built once per server process: settings, adapters, the model, the worker thread."""
    svc = AppServices()
    svc.ensure_worker()
    svc.warm_up()
    return svc


def prediction_ui(view: PredictionView | ErrorView, t: T) -> PredictionView | ErrorView:
    if isinstance(view, ErrorView):
        st.error(view.message)
        return view
    if view.known:
        st.success(view.headline)
    else:
        st.warning(view.headline)
    st.caption(t("result.top"))
    for name, confidence in view.bars:
        st.progress(min(1.0, max(0.0, confidence)), text=f"{name}: {confidence:.1%}")
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


def photo_ui(name: str, data: bytes, svc: AppServices, t: T, lang: str, key: str) -> Any:
    # The answer's column comes first: on a phone the columns stack, and the answer (with the
    # fruits to tap) is then above the photo, in sight without scrolling.
    answer, picture = st.columns([1, 1])
    view = svc.classify_photo(name, data, t, lang)
    # The answer goes out first; the photo's own processing and download come after it.
    with answer:
        prediction_ui(view, t)
        if isinstance(view, PredictionView):
            correction_ui(name, data, view, svc, t, lang, key)
    with picture:
        if isinstance(view, PredictionView):
            st.image(data, width="stretch")
    return view


# A fragment: a new photo reruns only this tab, not the sidebar's checks or the batch tab.
@st.fragment
def upload_ui(svc: AppServices, t: T, lang: str) -> Any:
    file = st.file_uploader(t("upload.label"), key="upload", type=None)
    if file is None:
        return None
    return photo_ui(file.name, file.getvalue(), svc, t, lang, "upload")


@st.fragment
def camera_ui(svc: AppServices, t: T, lang: str) -> Any:
    shot = st.camera_input(t("camera.label"), key="camera")
    if shot is None:
        return None
    return photo_ui(shot.name, shot.getvalue(), svc, t, lang, "camera")


def batch_ui(svc: AppServices, t: T, lang: str) -> str | None:
    with st.form("batch", clear_on_submit=True):
        files = st.file_uploader(t("batch.label"), accept_multiple_files=True, key="batch_files")
        pressed = st.form_submit_button(t("batch.submit"))
    if pressed:
        if not files:
            st.warning(t("batch.none"))
        else:
            report = svc.submit(files)
            # A small batch is done within moments: show it in this run, no polling round trip.
            svc.wait(report.session_id, SHORT_WAIT_SECONDS)
            st.session_state["session_id"] = report.session_id
            st.session_state["rejected"] = {**report.rejected, **report.not_sent}
    history = svc.sessions()
    if history:
        labels = dict(history)
        current = st.session_state.get("session_id")
        options = [sid for sid, _ in history]
        chosen = st.selectbox(
            t("batch.history"),
            options,
            index=options.index(current) if current in options else 0,
            format_func=lambda sid: labels[sid],
            key="history",
        )
        if chosen != current and st.button(t("batch.open")):
            st.session_state["session_id"] = chosen
            st.session_state["rejected"] = {}
            st.rerun()
    session_id: str | None = st.session_state.get("session_id")
    if session_id:
        st.subheader(t("batch.session", sid=session_id))
        for name, reason in st.session_state.get("rejected", {}).items():
            st.error(error_line(name, reason, t))
        done, total = svc.progress(session_id)
        if done < total:
            progress_ui(session_id, svc, t)
        else:
            results_ui(session_id, svc, t, lang)
    return session_id


@st.fragment(run_every=POLL_SECONDS)
def progress_ui(session_id: str, svc: AppServices, t: T) -> None:
    """Polls without freezing the page; reruns the app once the session is complete."""
    try:
        done, total = svc.progress(session_id)
    except FruitstreamError as exc:
        st.error(t("error.backend", reason=escape_markdown(str(exc))))
        return
    st.progress(done / total if total else 1.0, text=t("batch.progress", done=done, total=total))
    if done >= total:
        st.rerun(scope="app")


def results_ui(session_id: str, svc: AppServices, t: T, lang: str) -> None:
    rows = svc.results(session_id)
    summary, per_fruit = stats(rows, lang)
    st.markdown(f"#### {t('batch.stats')}")
    cols = st.columns(5)
    cols[0].metric(t("stats.count"), summary.total)
    cols[1].metric(
        t("stats.mean"),
        "-" if summary.mean_confidence is None else f"{summary.mean_confidence:.1%}",
    )
    cols[2].metric(t("stats.unknown"), summary.unknown)
    cols[3].metric(t("stats.errors"), summary.errors)
    rate = summary.images_per_second
    cols[4].metric(t("stats.rate"), "-" if rate is None else f"{rate:.1f}")
    if per_fruit:
        st.caption(t("stats.per_fruit"))
        st.bar_chart(per_fruit, horizontal=True)
    for row in rows:
        if row.status == Status.ERROR:
            st.error(error_line(row.filename, row.error or "", t))
    st.markdown(f"#### {t('batch.table')}")
    st.dataframe(table_rows(rows, t, lang), width="stretch", hide_index=True)
    st.download_button(
        t("batch.download"), csv_bytes(rows), file_name=f"fruitstream-{session_id}.csv",
        mime="text/csv",
    )  # fmt: skip
    st.markdown(f"#### {t('batch.grid')}")
    grid = [r for r in rows if r.status == Status.OK]
    pages = max(1, -(-len(grid) // GRID_PAGE))
    page = 1
    if pages > 1:  # a page of pictures at a time: memory and requests stay bounded
        page = int(st.number_input(t("batch.page", pages=pages), 1, pages, 1, key="grid_page"))
    shown = grid[(page - 1) * GRID_PAGE : page * GRID_PAGE]
    for start in range(0, len(shown), GRID_COLUMNS):
        for col, row in zip(
            st.columns(GRID_COLUMNS), shown[start : start + GRID_COLUMNS], strict=False
        ):
            image = svc.image(row)
            if image is not None:
                col.image(image, caption=caption(row, t, lang), width="stretch")
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
        st.markdown(f"#### {t('label.correct')}")
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
    """Live backend states, refreshed on their own so that they never hold up a photo."""
    st.markdown(f"### {t('sidebar.health')}")
    try:
        checks = svc.health()
    except FruitstreamError as exc:
        st.error(str(exc))
        return []
    for h in checks:
        st.markdown(health_line(h))
        for line in health_figures(h):
            st.caption(line)
    return checks


def sidebar_ui(svc: AppServices) -> str:
    with st.sidebar:
        lang = st.selectbox(
            "Language / Idioma", list(LANGUAGES), format_func=LANGUAGES.__getitem__, key="lang"
        )
        t = translator(lang)
        health_ui(svc, t)
        bundle = svc.classifier.bundle
        st.markdown(f"### {t('sidebar.model')}")
        adapted = f" + {bundle.adapted}" if bundle.adapted else ""
        st.markdown(f"`{bundle.name}` v{bundle.version}{adapted}")
        st.caption(t("sidebar.classes", n=len(bundle.labels)))
        st.caption(", ".join(fruit_name(label, lang) for label in bundle.labels))
    return lang


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
    svc = services()
    lang = sidebar_ui(svc)
    t = translator(lang)
    st.title(t("title"))
    st.html(TAP_TARGETS)
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
