"""What the browser tests share: the app's server, Chromium, and how to open the app."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fruitstream.entrypoints.ui.launch import is_up

CHROMIUM = os.environ.get("FRUITSTREAM_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]  # fmt: skip

# The answer to a photo of the upload or camera tab (``key``), whatever it says.
ANSWER = '[class*="st-key-{key}-answer"] [data-testid="stAlert"]'

# Records, on the browser's own clock, when an answer first appears under ``key``'s tab.
WATCH_ANSWER = """(key) => {
    window.__shownAt = null;
    const selector = `[class*="st-key-${key}-answer"] [data-testid="stAlert"]`;
    const observer = new MutationObserver(() => {
        if (window.__shownAt === null && document.querySelector(selector)) {
            window.__shownAt = performance.now();
            observer.disconnect();
        }
    });
    observer.observe(document.body, {childList: true, subtree: true});
}"""

# When the upload request of the photo finished (its response fully received).
UPLOAD_END = """() => performance.getEntriesByType('resource')
    .filter(e => e.name.includes('/_stcore/upload_file'))
    .map(e => e.responseEnd).pop()"""

sync_api = pytest.importorskip("playwright.sync_api", reason="needs the 'dev' extra (playwright)")


def _record(name: str, value: float) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "timings.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault(name, []).append(round(value, 1))
    path.write_text(json.dumps(data, indent=2))
    print(f"{name}: {value:.0f} ms")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        message = f"needs Chromium at {CHROMIUM} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class AppServer:
    """``fruitstream ui`` in its own process, on a free port, over ``env``'s settings."""

    def __init__(self, env: dict[str, str], wait: float = 90.0) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fruitstream", "ui", "--port", str(port)],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Read as it comes: a pipe nobody reads fills (64 KiB) and then blocks the app's next
        # log line, which a long session can reach.
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if is_up(self.url, wait, poll=0.1):
            return
        self.proc.kill()
        raise AssertionError(f"the app did not start: {self.log()[-2000:]}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    def log(self) -> str:
        """What the app has written so far (all of it once it has stopped)."""
        if self.proc.poll() is not None:
            self._reader.join(timeout=10)
        return "".join(self._lines)

    def stop(self) -> str:
        """Stops the server; returns its log."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.log()


@pytest.fixture(scope="session")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _need_chromium()
    server = AppServer({"FRUITSTREAM_DATA_DIR": str(tmp_path_factory.mktemp("uidata"))})
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.grant_permissions(["camera"])
        yield context
        context.close()


@pytest.fixture
def page(browser_context: Any, app_url: str) -> Iterator[Any]:
    page = browser_context.new_page()
    _open(page, app_url)
    page.get_by_text("Everything is working").first.wait_for(state="attached", timeout=60_000)
    yield page
    page.close()


def _open(page: Any, app_url: str) -> None:
    """Open the app and wait until its first run has finished.

    A file picked while the page is still settling is uploaded, but the browser then at times
    never asks the app to rerun with it (seen with a warm browser cache, the page up in under
    a second): a test picks a file only once the run is over, as Streamlit's own tests wait,
    and the page has fetched what the run drew.
    """
    page.goto(app_url)
    page.locator("h1").first.wait_for(timeout=60_000)
    page.locator(".st-key-preload").wait_for(state="attached", timeout=60_000)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        state="attached", timeout=60_000
    )
    page.wait_for_load_state("networkidle", timeout=60_000)
