"""The local stack of ``scripts/stack up`` for tests: its settings, and the Spark job run
as a process of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STACK_ENV = Path(os.environ.get("FRUITSTREAM_STACK_DIR", REPO / ".stack")) / "env"


def stack_env() -> dict[str, str]:
    if not STACK_ENV.exists():
        message = "needs the local stack: run scripts/stack up"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    env = {}
    for line in STACK_ENV.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


class SparkJob:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = {**os.environ, **env}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fruitstream", "spark-job"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        """The driver's log and every executor's stderr on the local worker."""
        texts = [self.log.read_text(errors="replace")]
        for work in ("spark-work", "spark-work2"):
            folder = STACK_ENV.parent / work
            texts += [p.read_text(errors="replace") for p in folder.glob("app-*/*/std*")]
        return "\n".join(texts)
