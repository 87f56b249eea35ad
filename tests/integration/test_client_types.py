"""The Python client's answers are typed: a misspelt field is a type error for mypy (it was
``dict[str, Any]``). A mypy process of its own (3-5 s), so here rather than in tests/unit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def test_mypy_refuses_a_misspelt_field(tmp_path: Path) -> None:
    """What the issue asked: ``result.label_typo`` is a type error (it was ``dict[str, Any]``)."""
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from fruitstream.client import Client

            def first_label(api: Client, session_id: str) -> str | None:
                row = api.results(session_id)[0]
                return row.label_typo
            """
        )
    )
    found = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", str(snippet)],
        capture_output=True, text=True, env={"MYPYPATH": str(SRC), "PATH": ""}, timeout=120,
    )  # fmt: skip
    assert found.returncode == 1, found.stdout + found.stderr
    assert '"ResultRow" has no attribute "label_typo"' in found.stdout
