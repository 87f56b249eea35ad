"""The layers, checked on the source: every module has a layer and imports nothing above it.

The order is the one README.md and docs/ARCHITECTURE.md state; a new module must be given
its layer here, and a change that imports upward fails here, not in review.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "fruitstream"

# Lowest first. A module may import its own layer and the layers below it, nothing above.
# A name stands for the module and everything under it (``core`` is ``core.*``).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("errors", ("fruitstream", "errors")),
    ("domain", ("domain",)),
    ("contracts", ("ports", "config", "model", "dataset", "heldout", "i18n", "stats")),
    ("classifier core", ("core",)),
    ("adapters", ("adapters",)),
    ("use cases", ("pipeline", "worker", "housekeeping")),
    ("service", ("service",)),
    ("wiring", ("bootstrap",)),
    ("tools", ("figures", "bench", "training", "client")),
    ("entrypoints", ("entrypoints", "__main__")),
)


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module(p): p for p in sorted(SRC.rglob("*.py"))}


def layer_of(module: str) -> int:
    """The layer index of ``fruitstream[.x.y]``: the most specific name that covers it."""
    best, rank = -1, -1
    for index, (_name, members) in enumerate(LAYERS):
        for member in members:
            if member == "fruitstream":  # the package's own __init__, not what is under it
                covers, full = module == member, member
            else:
                full = f"fruitstream.{member}"
                covers = module == full or module.startswith(full + ".")
            if covers and len(full) > best:
                best, rank = len(full), index
    return rank


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top, inside functions or for type checking."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_every_module_has_a_layer() -> None:
    missing = [m for m in MODULES if layer_of(m) < 0]
    assert missing == [], f"give these modules a layer in LAYERS: {missing}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_higher_layer(module: str) -> None:
    mine = layer_of(module)
    upward = {
        m: LAYERS[layer_of(m)][0]
        for m in _imports(MODULES[module])
        if m.startswith("fruitstream") and layer_of(m) > mine
    }
    assert upward == {}, f"{module} ({LAYERS[mine][0]}) imports from above: {upward}"


def test_the_layer_checker_catches_an_upward_import() -> None:
    """The rule itself: the domain importing the service would be refused."""
    assert layer_of("fruitstream.domain") < layer_of("fruitstream.service")
    assert layer_of("fruitstream.core.imaging") == layer_of("fruitstream.core")
    assert layer_of("fruitstream.entrypoints.api.routes") == len(LAYERS) - 1
    assert layer_of("fruitstream.nothing_here") == -1


def test_no_entrypoint_imports_an_adapter_or_tests_a_backend_name() -> None:
    for module, path in MODULES.items():
        if not module.startswith("fruitstream.entrypoints"):
            continue
        adapters = {m for m in _imports(path) if m.startswith("fruitstream.adapters")}
        assert adapters == set(), f"{module} imports {adapters}"
        assert "settings.queue" not in path.read_text(), f"{module} chooses backends by name"
        assert "settings.storage" not in path.read_text(), f"{module} chooses backends by name"


def test_the_benchmarks_do_not_import_training() -> None:
    """Training measures with the benchmarks; the benchmarks share only ``fruitstream.figures``
    with it, so the two packages import each other in no cycle."""
    for module, path in MODULES.items():
        if module.startswith("fruitstream.bench"):
            training = {m for m in _imports(path) if m.startswith("fruitstream.training")}
            assert training == set(), f"{module} imports {training}"


def test_the_domain_sits_at_the_bottom() -> None:
    ours = {m for m in _imports(SRC / "domain.py") if m.startswith("fruitstream")}
    assert ours <= {"fruitstream.errors"}
    assert not {"numpy", "PIL"} & {m.split(".")[0] for m in _imports(SRC / "domain.py")}


def test_the_ui_and_the_api_reach_backends_only_through_the_service() -> None:
    for module, path in MODULES.items():
        if module.startswith(("fruitstream.entrypoints.ui", "fruitstream.entrypoints.api")):
            assert "fruitstream.bootstrap" not in _imports(path), module


def test_loading_settings_pulls_in_neither_pillow_nor_numpy() -> None:
    import subprocess

    probe = "import sys, fruitstream.config; print(sorted({'PIL', 'numpy'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
