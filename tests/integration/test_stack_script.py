"""scripts/stack refuses to start on a nearly full disk, with a message that says so."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stack_up_stops_early_and_says_why_when_the_disk_is_nearly_full(tmp_path: Path) -> None:
    # No disk has a petabyte free, so the check must refuse before installing or starting anything.
    env = {
        **os.environ,
        "FRUITSTREAM_STACK_DIR": str(tmp_path),
        "FRUITSTREAM_STACK_MIN_FREE_GB": "1000000",
    }
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/stack"), "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "MB free on the disk of" in out.stderr
    assert "needs 1000000 GB" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
