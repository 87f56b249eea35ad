"""The layers, checked on the source: entrypoints over the service, the domain at the bottom."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "fruitstream"
ENTRYPOINTS = sorted(
    str(p.relative_to(SRC)) for p in (SRC / "entrypoints").rglob("*.py") if p.name != "__init__.py"
)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_no_entrypoint_imports_an_adapter_or_tests_a_backend_name() -> None:
    for name in ENTRYPOINTS:
        path = SRC / name
        adapters = {m for m in _imports(path) if m.startswith("fruitstream.adapters")}
        assert adapters == set(), f"{name} imports {adapters}"
        text = path.read_text()
        named = re.findall(r"settings\.(?:queue|storage)\b", text)
        assert named == [], f"{name} chooses backends by name"


def test_the_core_knows_nothing_above_it() -> None:
    above = ("fruitstream.entrypoints", "fruitstream.adapters", "fruitstream.service",
             "fruitstream.bootstrap", "fruitstream.pipeline", "fruitstream.worker")  # fmt: skip
    for path in (SRC / "core").rglob("*.py"):
        found = {m for m in _imports(path) if m.startswith(above)}
        assert found == set(), f"{path.name} imports {found}"


def test_the_domain_sits_at_the_bottom() -> None:
    ours = {m for m in _imports(SRC / "domain.py") if m.startswith("fruitstream")}
    assert ours <= {"fruitstream.errors"}
    assert not {"numpy", "PIL"} & {m.split(".")[0] for m in _imports(SRC / "domain.py")}


def test_the_ui_and_the_api_reach_backends_only_through_the_service() -> None:
    for name in ("entrypoints/ui/app.py", "entrypoints/ui/views.py", "entrypoints/api.py"):
        assert "fruitstream.bootstrap" not in _imports(SRC / name), name


def test_the_command_line_stays_thin() -> None:
    lines = (SRC / "entrypoints" / "cli.py").read_text().count("\n")
    assert lines < 350, f"cli.py has {lines} lines: move logic into the service"
