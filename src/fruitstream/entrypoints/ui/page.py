"""The page around the app: its styles, and the script that sets its language and head."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from fruitstream.i18n import WIDGET_PATTERNS, WIDGET_TEXTS, translator

BROWSER_COOKIE = "fruitstream_browser"
LANG_COOKIE = "fruitstream_lang"
THEME_COLOUR = "#2e7d32"
# Where Streamlit serves the files of static/ beside app.py (server.enableStaticServing).
STATIC = "app/static"
# The uploaders that take one photo (by their widget keys).
SINGLE_UPLOADERS = ".st-key-upload"

# Phones (narrow screens): a one-line title and a short top, so that an answer is in sight
# without scrolling; every control at least 44 x 44 px (WCAG 2.5.5). All screens: the fruits
# to tap under an answer a finger's size and as wide as their column; text that Streamlit fades
# (captions, the uploader's limits) or draws in its red (the camera's "Clear photo": 3.65:1 in
# the dark theme) at full contrast (WCAG 1.4.3, both themes, as it inherits the theme's text
# colour); the guesses' bars; the language switch in the header bar, where it takes no room
# from the answer; the camera's frame at most half a screen high, so that its button is in
# sight whatever the camera's shape.
STYLE = """<style>
[data-testid="stMainBlockContainer"] {padding-top: 3.5rem}
h1 {font-size: 2rem !important; padding-top: 0.5rem !important}
[data-testid="stCaptionContainer"], [data-testid="stFileUploaderDropzoneInstructions"] span,
[data-testid="stFileUploaderFileData"] small, [data-testid="stWidgetLabel"] p,
[data-testid="stMetricLabel"], [data-testid="stExpander"] summary,
[data-testid="stTooltipHoverTarget"], [data-testid="stCameraInputButton"],
[data-testid="stCameraInputButton"] span {color: inherit !important; opacity: 1 !important}
[class*='st-key-upload-pick-'] button, [class*='st-key-camera-pick-'] button {
    min-height: 44px; width: 100%}
.fs-guesses p {margin: 0 0 0.25rem 0; font-size: 0.875rem}
.fs-guesses ul {list-style: none; margin: 0; padding: 0}
.fs-guesses li {margin: 0 0 0.5rem 0}
.fs-guess {display: block}
.fs-bar {display: block; height: 0.4rem; border-radius: 0.2rem; background: rgba(128,128,128,0.25)}
.fs-bar span {display: block; height: 100%; border-radius: 0.2rem; background: #1565c0}
.st-key-language {position: fixed; top: 0.6rem; right: 3.5rem; z-index: 999991; width: auto}
.st-key-language button {min-height: 44px}
.st-key-language button, .st-key-language p {color: inherit !important}
[data-testid="stCameraInputWebcamStyledBox"], [data-testid="stCameraInput"] img,
[data-testid="stCameraInputWebcamStyledBox"] video {max-height: 55vh; object-fit: contain}
.st-key-grid [data-testid="stHorizontalBlock"],
.st-key-stats [data-testid="stHorizontalBlock"] {flex-wrap: wrap; gap: 0.75rem}
@media (max-width: 640px) {
  [data-testid="stMainBlockContainer"] {padding: 3.75rem 1rem 1rem 1rem}
  h1 {font-size: 1.3rem !important; padding: 0.25rem 0 !important}
  .st-key-language {top: 0.55rem; right: 3rem}
  button, [role="tab"], summary, [data-baseweb="select"] > div, input[type="text"],
  input[type="number"], [data-testid="stFileUploaderDropzone"] button {
      min-height: 44px !important; min-width: 44px !important}
  [data-testid="stFileUploaderDeleteBtn"] button {width: 44px; height: 44px}
  [role="tab"] {padding: 0 0.75rem !important}
  [data-testid="stHeader"] button, [data-testid="stSidebarCollapsedControl"] button,
  [data-testid="stExpandSidebarButton"], [data-testid="stSidebarCollapseButton"] button {
      width: 44px !important; height: 44px !important}
  .st-key-grid [data-testid="stHorizontalBlock"],
  .st-key-stats [data-testid="stHorizontalBlock"] {flex-direction: row !important}
  .st-key-grid [data-testid="stColumn"], .st-key-stats [data-testid="stColumn"] {
      min-width: calc(33% - 0.75rem) !important; max-width: calc(33.3% - 0.5rem) !important;
      flex: 1 1 calc(33% - 0.75rem) !important; width: auto !important}
  h2 {font-size: 1.25rem !important}
  h3 {font-size: 1.1rem !important}
  [data-testid="stMetricValue"] {font-size: 1.5rem !important}
}
</style>"""

# Runs in the page itself (st.html with JavaScript): the document's language, the browser's
# cookies (its id, for its own history, and its language, for the next visit), the head's
# manifest, icon and theme colour, Streamlit's own widget texts in the chosen language, and
# focus on a new answer (so that keyboard and screen-reader users are taken to it).
_SCRIPT = Path(__file__).with_name("page.js")


def page_script(lang: str, browser_id: str) -> str:
    """The script for the page in ``lang``; ``browser_id`` is kept in the browser's cookie."""
    config = {
        "lang": lang,
        "cookies": {BROWSER_COOKIE: browser_id, LANG_COOKIE: lang},
        "static": STATIC,
        "theme": THEME_COLOUR,
        "texts": WIDGET_TEXTS.get(lang, {}),
        "patterns": WIDGET_PATTERNS.get(lang, []),
        # Streamlit's uploader offers "Add files" even when it takes one photo.
        "single": {"Add files": translator(lang)("upload.another")},
        "single_scope": SINGLE_UPLOADERS,
    }
    # "</" cannot end the script early from inside a JSON string.
    settings = json.dumps(config).replace("</", "<\\/")
    return f"<script>{_script().replace('__CONFIG__', settings)}</script>"


@functools.cache
def _script() -> str:
    """page.js, read once per process (the page's script goes out at every rerun)."""
    return _SCRIPT.read_text(encoding="utf-8")
