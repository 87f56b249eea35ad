"""How ``fruitstream ui`` starts Streamlit: its options, and the warm-up run at server start."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from fruitstream.config import Settings
from fruitstream.entrypoints.ui.launch import streamlit_command, warm


def test_the_server_options_keep_tracebacks_off_the_page_and_allow_the_warm_up() -> None:
    command = streamlit_command(Settings(), "0.0.0.0", 8600)
    options = dict(zip(command[5::2], command[6::2], strict=False))
    assert command[2:5] == ["fruitstream.entrypoints.ui.launch", "run", command[4]]
    assert command[4].endswith("app.py")
    assert options["--client.showErrorDetails"] == "none"
    assert options["--server.scriptHealthCheckEnabled"] == "true"
    assert options["--server.enableStaticServing"] == "true"
    assert options["--server.address"] == "0.0.0.0" and options["--server.port"] == "8600"


class _App(http.server.BaseHTTPRequestHandler):
    """Answers like Streamlit: health first, then the one run of the app asked for."""

    runs: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        if self.path == "/_stcore/script-health-check":
            self.runs.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_the_warm_up_runs_the_app_once_the_server_answers(server: str) -> None:
    _App.runs.clear()
    assert warm(server, wait=10)
    assert _App.runs == ["/_stcore/script-health-check"]


def test_the_warm_up_gives_up_when_no_server_comes() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nobody listens on it
    assert not warm(f"http://127.0.0.1:{port}", wait=0.5)
