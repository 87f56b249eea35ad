"""How ``fruitstream ui`` starts Streamlit: the server options the app needs."""

from __future__ import annotations

import sys
from pathlib import Path

from fruitstream.config import Settings


def streamlit_command(settings: Settings, host: str, port: int) -> list[str]:
    """The command line of the Streamlit server for the app, on ``host:port``."""
    app = Path(__file__).resolve().parent / "app.py"
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", host, "--server.port", str(port),
        "--server.headless", "true", "--server.maxUploadSize", str(settings.max_upload_mb),
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal",
        # A full collection after every rerun walks the model's and pandas' heap while
        # holding the GIL: a hundred milliseconds and more before a photo's answer.
        "--runner.postScriptGC", "false",
    ]  # fmt: skip
