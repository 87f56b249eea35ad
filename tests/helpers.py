"""Helpers shared by the tiers: running the real command line, workers, /proc/cpuinfo texts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fruitstream.dataset import image_files


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fruitstream", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def run_json(*args: str, **kwargs: Any) -> tuple[int, Any]:
    out = run_cli(*args, **kwargs)
    return out.returncode, json.loads(out.stdout)


def photos(dataset: Path, n: int, dest: Path, source: str = "studio/test") -> Path:
    """``n`` real photos (copied, distinct names) in a fresh folder."""
    dest.mkdir(parents=True)
    pool = image_files(dataset / source)
    for i in range(n):
        src = pool[(i * 7) % len(pool)]
        shutil.copy(src, dest / f"{i:04d}-{src.name}")
    return dest


class Workers:
    """Worker processes started with ``fruitstream worker``; all killed at the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}
        self.procs: list[subprocess.Popen[str]] = []

    def start(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fruitstream", "worker"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# /proc/cpuinfo texts of machines with and without a 32-bit int8 dot product.
X86_HEAD = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU @ 2.0GHz\n"
AVX2_ONLY = X86_HEAD + "flags\t\t: fpu sse sse2 ssse3 fma avx avx2 f16c\n\nprocessor\t: 1\n"
AVX512_NO_VNNI = X86_HEAD + "flags\t\t: avx avx2 avx512f avx512bw avx512vl\n"
VNNI = X86_HEAD + "flags\t\t: avx avx2 avx512f avx512bw avx512_vnni\n"
ARM_DOTPROD = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\nCPU part\t: 0xd0c\n"
ARM_PLAIN = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n"
