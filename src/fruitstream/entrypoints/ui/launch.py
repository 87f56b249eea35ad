"""How ``fruitstream ui`` starts Streamlit: the server options the app needs, and its warm-up."""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from pathlib import Path

from fruitstream.config import Settings

# How long the warm-up waits for the server to answer before giving up (the first person
# then pays the model's loading, as before).
WARM_WAIT_SECONDS = 120.0


def streamlit_command(settings: Settings, host: str, port: int) -> list[str]:
    """The command line of the app's server on ``host:port``: Streamlit, through ``main``
    below, which warms the app as soon as the server is up."""
    app = Path(__file__).resolve().parent / "app.py"
    return [
        sys.executable, "-m", "fruitstream.entrypoints.ui.launch", "run", str(app),
        "--server.address", host, "--server.port", str(port),
        "--server.headless", "true", "--server.maxUploadSize", str(settings.max_upload_mb),
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal",
        # Errors reach the page as one sentence the app writes; tracebacks (with the server's
        # file paths) go to the server's log only.
        "--client.showErrorDetails", "none",
        # The web manifest and its icons, at app/static/ (static/ beside app.py).
        "--server.enableStaticServing", "true",
        # The warm-up below runs the app once through this endpoint, with no browser.
        "--server.scriptHealthCheckEnabled", "true",
        # A full collection after every rerun walks the model's and pandas' heap while
        # holding the GIL: a hundred milliseconds and more before a photo's answer.
        "--runner.postScriptGC", "false",
    ]  # fmt: skip


def is_up(base_url: str, wait: float, poll: float = 0.2) -> bool:
    """Whether the Streamlit server at ``base_url`` answers its health check within ``wait``
    seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            time.sleep(poll)
    return False


def warm(base_url: str, wait: float = WARM_WAIT_SECONDS) -> bool:
    """Run the app once as soon as the server answers, so that the model, the worker and the
    decoders are loaded before the first person comes (not on their first photo)."""
    if not is_up(base_url, wait):
        return False
    try:
        check = f"{base_url}/_stcore/script-health-check"
        with urllib.request.urlopen(check, timeout=wait) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def main(argv: list[str]) -> None:
    """``python -m fruitstream.entrypoints.ui.launch run APP [streamlit options]``."""
    from streamlit.web import cli

    options = dict(zip(argv[::2], argv[1::2], strict=False))
    host = options.get("--server.address", "127.0.0.1")
    host = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
    url = f"http://{host}:{options.get('--server.port', '8501')}"
    threading.Thread(target=warm, args=(url,), name="fruitstream-warm", daemon=True).start()
    sys.argv = ["streamlit", *argv]
    cli.main()


if __name__ == "__main__":
    main(sys.argv[1:])
