"""The app as its people meet it: on a phone, in Spanish, with a screen reader (axe-core), with a
history of their own, from the first photo after the server starts.

Screenshots land in ``test-artifacts/`` (git-ignored), timings in its ``timings.json``.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fruitstream.dataset import image_files
from fruitstream.i18n import TEXTS, WIDGET_TEXTS
from tests.e2e.conftest import (
    ANSWER,
    ARTIFACTS,
    CHROMIUM,
    FLAGS,
    UPLOAD_END,
    WATCH_ANSWER,
    AppServer,
    _need_chromium,
    _open,
    _record,
    sync_api,
)

REPO = Path(__file__).resolve().parents[2]
AXE = Path(os.environ.get("FRUITSTREAM_AXE", REPO / ".cache/axe/node_modules/axe-core/axe.min.js"))
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 768}

# Every control a person can reach, as drawn (width, height): buttons, tabs, fields, links,
# expanders. Visually hidden ones (1 x 1 px "skip" links) are left out.
_CONTROLS = """() => [...document.querySelectorAll(
    'button, [role=tab], [role=combobox], input:not([type=file]), a[href], summary, [role=radio]')]
  .filter(e => {
    const r = e.getBoundingClientRect(), s = getComputedStyle(e);
    return r.width > 1 && r.height > 1 && s.visibility !== 'hidden' && r.right > 0
      && r.left < innerWidth && !e.closest('.st-key-preload, [aria-hidden=true]');
  })
  .map(e => {
    const r = e.getBoundingClientRect();
    const name = e.getAttribute('aria-label') || e.innerText || e.getAttribute('data-testid');
    return {name: (name || e.tagName).slice(0, 40), w: r.width, h: r.height};
  })"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    _need_chromium()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


@contextmanager
def _page(chromium: Any, viewport: dict[str, int], scheme: str = "light") -> Iterator[Any]:
    """A page in a new browser of its own (its own cookies), closed after: a phone (touch) or
    a desktop, in the light or dark colour scheme (which Streamlit follows)."""
    phone = viewport["width"] < 640
    context = chromium.new_context(
        viewport=viewport,
        has_touch=phone,
        is_mobile=phone,
        accept_downloads=True,
        color_scheme=scheme,
    )
    context.grant_permissions(["camera"])
    try:
        yield context.new_page()
    finally:
        context.close()


def _photo(dataset: Path, fruit: str, n: int = 0) -> Path:
    return image_files(dataset / "grocery" / "val" / fruit)[n]


def _shaped(dataset: Path, tmp_path: Path, shape: str) -> Path:
    """A square photo, or a 12 MP portrait one (3024 x 4032), of a banana."""
    img = Image.open(_photo(dataset, "banana")).convert("RGB")
    if shape == "square":
        side = min(img.size)
        img = img.crop((0, 0, side, side)).resize((1024, 1024))
    else:
        img = img.resize((3024, 4032))
    path = tmp_path / f"{shape}.jpg"
    img.save(path, quality=90)
    return path


def _upload(page: Any, photo: Path, key: str = "upload") -> Any:
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(photo))
    answer = page.locator(ANSWER.format(key=key)).first
    answer.wait_for(timeout=30_000)
    page.locator(".fs-guesses li").last.wait_for(timeout=30_000)
    return answer


def _settle(page: Any) -> None:
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        state="attached", timeout=60_000
    )
    page.wait_for_timeout(600)


def _tab(page: Any, index: int) -> None:
    page.get_by_role("tab").nth(index).click()
    _settle(page)


def _camera_ready(page: Any) -> None:
    """Chromium's fake camera delivers frames (a shot before that is empty)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('video')].some(v => v.readyState >= 2)",
        timeout=30_000,
    )
    page.wait_for_timeout(300)


def _shoot(page: Any) -> float:
    """The camera tab's shot, with Chromium's fake camera; ms from the click to the answer."""
    _tab(page, 1)
    _camera_ready(page)
    page.evaluate(WATCH_ANSWER, "camera")
    clicked = page.evaluate("() => performance.now()")
    page.locator('[data-testid="stCameraInputButton"]').click()
    page.locator(ANSWER.format(key="camera")).first.wait_for(timeout=30_000)
    page.wait_for_function("() => window.__shownAt !== null")
    shown = float(page.evaluate("() => window.__shownAt"))
    _settle(page)
    return shown - clicked


def _batch(page: Any, paths: list[Path], name: str = "") -> None:
    _tab(page, 2)
    form = page.locator('[data-testid="stForm"]').first
    form.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        [str(p) for p in paths]
    )
    page.get_by_text(paths[-1].name).first.wait_for(timeout=30_000)
    if name:
        field = form.locator('input[type="text"]')
        field.fill(name)
        field.press("Tab")
    form.locator('[data-testid="stBaseButton-secondaryFormSubmit"]').click()
    page.locator('[data-testid="stDataFrame"]:visible').wait_for(timeout=60_000)
    page.locator(".st-key-grid [data-testid='stImage']").last.wait_for(timeout=30_000)
    _settle(page)


def _batch_files(dataset: Path, tmp_path: Path, fruits: tuple[str, ...]) -> list[Path]:
    folder = tmp_path / "batch"
    folder.mkdir(exist_ok=True)
    paths = []
    for fruit in fruits:
        dest = folder / f"{fruit}.jpg"
        shutil.copy(_photo(dataset, fruit), dest)
        paths.append(dest)
    return paths


def _axe(page: Any) -> list[str]:
    """Critical and serious axe-core violations on the page as it is: ``rule: element``."""
    if not AXE.exists():
        raise AssertionError(f"axe-core is not installed at {AXE} (make install-dev)")
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
            .filter(v => v.impact === 'critical' || v.impact === 'serious')
            .flatMap(v => v.nodes.map(n => v.id + ': ' + n.target.join(' ')
                + ' (' + (n.failureSummary || '').split('\\n')[1] + ')'))"""
    )
    return list(found)


def _too_small(page: Any) -> list[dict[str, Any]]:
    return [c for c in page.evaluate(_CONTROLS) if c["w"] < 44 or c["h"] < 44]


@pytest.mark.parametrize("shape", ["square", "portrait-12mp"])
def test_on_a_phone_the_answer_is_in_the_first_half_and_the_top_three_in_sight(
    chromium: Any, app_url: str, dataset: Path, tmp_path: Path, shape: str
) -> None:
    with _page(chromium, PHONE) as page:
        _open(page, app_url)
        answer = _upload(page, _shaped(dataset, tmp_path, shape))
        _settle(page)
        page.evaluate("() => window.scrollTo(0, 0)")
        top = answer.bounding_box()
        guesses = page.locator(".fs-guesses li").last.bounding_box()
        page.screenshot(path=str(ARTIFACTS / f"phone-answer-{shape}.png"))
        assert top is not None and guesses is not None
        assert top["y"] <= PHONE["height"] / 2, f"the answer starts at y = {top['y']:.0f}"
        bottom = guesses["y"] + guesses["height"]
        assert bottom <= PHONE["height"], f"the top-3 end at y = {bottom:.0f}"
        assert page.locator(".fs-guesses li").count() == 3
        # The single-photo uploader offers another photo, not "Add files".
        assert page.get_by_role("button", name="Choose another photo").count() == 1
        assert page.get_by_role("button", name="Add files").count() == 0
        # Focus is taken to the answer (keyboard and screen reader), not left on the page.
        focused = "document.activeElement.closest('[class*=\"st-key-upload-answer\"]')"
        assert page.evaluate(f"() => {focused} !== null")


def test_the_camera_shows_its_frame_once_and_its_button_in_sight(
    chromium: Any, app_url: str
) -> None:
    for viewport in (DESKTOP, PHONE):
        with _page(chromium, viewport) as page:
            _open(page, app_url)
            _tab(page, 1)
            button = page.locator('[data-testid="stCameraInputButton"]')
            button.wait_for(timeout=30_000)
            _camera_ready(page)
            box = button.bounding_box()
            assert box is not None
            if viewport is DESKTOP:
                assert box["y"] + box["height"] <= DESKTOP["height"], f"Take Photo at {box}"
            _record("camera_click_to_answer_ms", _shoot(page))
            panel = page.locator('[role="tabpanel"]:visible')
            # The camera's box shows the shot; the answer beside it does not repeat it.
            assert panel.locator('[data-testid="stImage"]').count() == 0
            assert panel.locator('[data-testid="stCameraInput"] img').count() == 1
            page.screenshot(path=str(ARTIFACTS / f"camera-{viewport['width']}.png"))


def test_every_control_on_a_phone_is_at_least_44_px(
    chromium: Any, app_url: str, dataset: Path, tmp_path: Path
) -> None:
    with _page(chromium, PHONE) as page:
        _open(page, app_url)
        problems = {"upload, before": _too_small(page)}
        _upload(page, _photo(dataset, "kiwi"))
        _settle(page)
        problems["upload, after"] = _too_small(page)
        _tab(page, 1)
        problems["camera, before"] = _too_small(page)
        _shoot(page)
        problems["camera, after"] = _too_small(page)
        _tab(page, 2)
        problems["batch, before"] = _too_small(page)
        _batch(page, _batch_files(dataset, tmp_path, ("banana", "lemon", "pear", "kiwi")))
        problems["batch, after"] = _too_small(page)
        page.screenshot(path=str(ARTIFACTS / "phone-batch.png"), full_page=True)
        assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.parametrize(("lang", "scheme"), [("en", "light"), ("es", "light"), ("es", "dark")])
def test_no_critical_or_serious_accessibility_violation(
    chromium: Any, app_url: str, dataset: Path, tmp_path: Path, lang: str, scheme: str
) -> None:
    """axe-core on each tab, before and after a result, on a desktop and a phone."""
    found: dict[str, list[str]] = {}
    for viewport in (DESKTOP, PHONE):
        where = f"{viewport['width']}px"
        with _page(chromium, viewport, scheme) as page:
            _open(page, f"{app_url}/?lang={lang}")
            found[f"{where} upload, before"] = _axe(page)
            _upload(page, _photo(dataset, "orange"))
            _settle(page)
            found[f"{where} upload, after"] = _axe(page)
            _tab(page, 1)
            found[f"{where} camera, before"] = _axe(page)
            _shoot(page)
            found[f"{where} camera, after"] = _axe(page)
            _tab(page, 2)
            found[f"{where} batch, before"] = _axe(page)
            _batch(page, _batch_files(dataset, tmp_path, ("apple", "lime", "mango")))
            found[f"{where} batch, after"] = _axe(page)
    assert {k: v for k, v in found.items() if v} == {}


def _english_phrases() -> list[str]:
    """What the page may not show in Spanish: the app's English texts (the parts that are not
    placeholders) and Streamlit's widget texts."""
    phrases = set(WIDGET_TEXTS["es"]) | {"per file", "Remove", "Limit"}
    for entry in TEXTS.values():
        if entry["en"] == entry.get("es"):
            continue
        phrases.update(p.strip() for p in re.split(r"\{[^}]*\}", entry["en"]) if len(p) > 3)
    phrases -= {p for p in phrases if p.lower() in {"kiwi", "mango", "error", "photo", ": "}}
    return sorted(p for p in phrases if len(p.strip(" :.,()")) > 3)


def _english_on_page(page: Any) -> list[str]:
    text = page.evaluate(
        """() => [...document.querySelectorAll('[data-testid="stApp"] *')]
            .filter(e => e.checkVisibility()
                && e.closest('[data-testid="stIconMaterial"]') === null)
            .flatMap(e => [...e.childNodes].filter(n => n.nodeType === 3).map(n => n.data))
            .join('\\n')"""
    )
    labels = page.evaluate(
        """() => [...document.querySelectorAll('[aria-label], [placeholder], [title]')]
            .filter(e => e.checkVisibility())
            .flatMap(e => ['aria-label', 'placeholder', 'title'].map(a => e.getAttribute(a)))
            .filter(Boolean).join('\\n')"""
    )
    # The language switch's label is in both languages: how one finds the other.
    shown = f"{text}\n{labels}".replace("Language / Idioma", "")
    found = []
    for phrase in _english_phrases():
        match = re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", shown)
        if match:  # with what surrounds it, to find where it is
            found.append(shown[max(0, match.start() - 30) : match.end() + 30].replace("\n", " | "))
    return found


def test_spanish_everywhere_remembered_and_the_page_says_es(
    chromium: Any, app_url: str, dataset: Path, tmp_path: Path
) -> None:
    with _page(chromium, PHONE) as page:
        _open(page, app_url)
        assert page.evaluate("document.documentElement.lang") == "en"
        page.get_by_role("radio", name="Español").or_(
            page.get_by_role("button", name="Español")
        ).first.click()
        page.get_by_text("fruitstream: ¿qué fruta es?").wait_for(timeout=30_000)
        _settle(page)
        assert page.evaluate("document.documentElement.lang") == "es"
        english = {"upload, before": _english_on_page(page)}
        _upload(page, _photo(dataset, "pineapple"))
        _settle(page)
        english["upload, after"] = _english_on_page(page)
        _shoot(page)
        english["camera, after"] = _english_on_page(page)
        _batch(page, _batch_files(dataset, tmp_path, ("orange", "avocado")))
        english["batch, after"] = _english_on_page(page)
        page.screenshot(path=str(ARTIFACTS / "phone-spanish-batch.png"), full_page=True)
        assert {k: v for k, v in english.items() if v} == {}
        # Back another day, the address typed again (no ?lang=): still Spanish.
        page.goto(app_url)
        page.get_by_text("fruitstream: ¿qué fruta es?").wait_for(timeout=30_000)
        assert page.evaluate("document.documentElement.lang") == "es"
        assert page.get_by_text("Subir foto").first.is_visible()


def _history(page: Any) -> tuple[str, list[str]]:
    """The history list's chosen entry and all its entries."""
    box = page.locator(".st-key-history")
    chosen = box.locator('input[role="combobox"]').input_value().strip()
    box.locator('button[aria-haspopup="listbox"]').click()
    page.get_by_role("option").first.wait_for(timeout=10_000)
    options = [o.strip() for o in page.get_by_role("option").all_inner_texts()]
    page.keyboard.press("Escape")
    return chosen, options


def test_history_follows_the_batch_is_per_browser_names_batches_and_lists_photos(
    chromium: Any, app_url: str, dataset: Path, tmp_path: Path
) -> None:
    solo = tmp_path / "solo-banana.jpg"
    shutil.copy(_photo(dataset, "banana", 2), solo)
    with _page(chromium, DESKTOP) as page:
        _open(page, app_url)
        _upload(page, solo)
        _settle(page)
        _batch(page, _batch_files(dataset, tmp_path, ("kiwi", "lemon")), name="market")
        chosen, options = _history(page)
        assert chosen.startswith("market · ") and chosen.endswith("2 photos"), chosen
        assert page.get_by_role("heading", name="Batch: market").is_visible()
        assert any(o.startswith("solo-banana.jpg · ") for o in options), options
        # A second batch: the list and the results below both move to it.
        _batch(page, _batch_files(dataset, tmp_path, ("pear",)))
        chosen, options = _history(page)
        assert chosen.startswith("pear.jpg · "), chosen
        assert page.get_by_role("heading", name="Batch: pear.jpg").is_visible()
        assert len([o for o in options if o.startswith(("market", "pear.jpg", "solo"))]) == 3
        page.screenshot(path=str(ARTIFACTS / "history.png"), full_page=True)
    with _page(chromium, DESKTOP) as page:  # another browser sees none of it
        _open(page, app_url)
        _tab(page, 2)
        assert page.locator(".st-key-history").count() == 0
        assert page.get_by_text("market").count() == 0


def test_an_answer_can_be_saved_as_an_image_or_json(
    chromium: Any, app_url: str, dataset: Path, classifier: Any
) -> None:
    photo = _photo(dataset, "pomegranate")
    with _page(chromium, DESKTOP) as page:
        _open(page, app_url)
        _upload(page, photo)
        _settle(page)
        with page.expect_download() as card:
            page.get_by_role("button", name="Save as image").click()
        png = Path(card.value.path()).read_bytes()
        assert Image.open(io.BytesIO(png)).size == (720, 360)
        with page.expect_download() as record:
            page.get_by_role("button", name="Save as JSON").click()
        saved = json.loads(Path(record.value.path()).read_text())
        pred = classifier.classify(photo.read_bytes())
        assert saved["label"] == pred.label and saved["file"] == photo.name
        assert [k["label"] for k in saved["top_k"]] == [k.label for k in pred.top_k]


def test_it_can_be_added_to_a_home_screen(chromium: Any, app_url: str) -> None:
    """A web manifest with its icons and a theme colour, linked from the page's head."""
    with _page(chromium, PHONE) as page:
        _open(page, app_url)
        page.locator('head link[rel="manifest"]').wait_for(state="attached", timeout=30_000)
        href = page.evaluate("document.querySelector('link[rel=manifest]').href")
        manifest = page.request.get(href)
        assert manifest.ok, href
        data = json.loads(manifest.text())
        assert data["display"] == "standalone" and data["short_name"] == "fruitstream"
        sizes = set()
        for icon in data["icons"]:
            got = page.request.get(href.rsplit("/", 1)[0] + "/" + icon["src"])
            assert got.ok and got.headers["content-type"] == "image/png"
            sizes.add(Image.open(io.BytesIO(got.body())).size)
        assert {(192, 192), (512, 512)} <= sizes
        theme = page.evaluate("document.querySelector('meta[name=theme-color]').content")
        assert theme == data["theme_color"]


def test_first_answer_after_start(chromium: Any, dataset: Path, tmp_path: Path) -> None:
    """A server just started, a person at once: the model was warmed at start, not on their
    photo. The time from the upload to the answer is recorded (target: <= 400 ms)."""
    server = AppServer({"FRUITSTREAM_DATA_DIR": str(tmp_path / "data")})
    try:
        with _page(chromium, DESKTOP) as page:
            _open(page, server.url)
            page.evaluate(WATCH_ANSWER, "upload")
            page.evaluate("() => performance.clearResourceTimings()")
            _upload(page, _photo(dataset, "lemon"))
            page.wait_for_function("() => window.__shownAt !== null")
            upload_end = page.evaluate(UPLOAD_END)
            assert upload_end is not None, "the browser recorded no upload request"
            shown_at = page.evaluate("() => window.__shownAt")
            _record("first_answer_after_start_ms", shown_at - upload_end)
    finally:
        log = server.stop()
    assert "Traceback" not in log, log[-3000:]


def test_an_error_is_one_sentence_on_the_page_and_the_traceback_in_the_log(
    chromium: Any, tmp_path: Path
) -> None:
    missing = tmp_path / "no-model-here"
    server = AppServer(
        {"FRUITSTREAM_DATA_DIR": str(tmp_path / "data"), "FRUITSTREAM_MODEL_DIR": str(missing)}
    )
    try:
        with _page(chromium, DESKTOP) as page:
            page.goto(server.url)
            alert = page.locator('[data-testid="stAlert"]').filter(has_text="cannot start")
            alert.wait_for(timeout=60_000)
            assert alert.inner_text().startswith("The app cannot start: ")
            assert "no-model-here" in alert.inner_text()  # it says which setting is wrong
            assert page.locator('[data-testid="stException"]').count() == 0
            body = page.inner_text("body")
            assert "Traceback" not in body and "/site-packages/" not in body
            assert str(REPO) not in body
    finally:
        log = server.stop()
    assert "Traceback" in log and "the app cannot start" in log
