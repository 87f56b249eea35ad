"""The layers, checked on the source: every module has a layer and imports nothing above it.

The order is the one README.md and docs/ARCHITECTURE.md state; a new module must be given
its layer here, and a change that imports upward fails here, not in review.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "fruitstream"

DOC = SRC.parents[1] / "docs" / "ARCHITECTURE.md"


def _layers_of(doc: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The layer table of docs/ARCHITECTURE.md ("## Layers"), lowest first: each row's layer
    and the modules in its second column (`fruitstream` is the package's own __init__)."""
    section = doc.split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    layers = []
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if set(cells[0]) <= {"-"}:
            continue
        layers.append((cells[0], tuple(re.findall(r"`([a-z_0-9]+)`", cells[1]))))
    return tuple(layers)


# Lowest first. A module may import its own layer and the layers below it, nothing above.
# A name stands for the module and everything under it (``core`` is ``core.*``). One home:
# the table in docs/ARCHITECTURE.md.
LAYERS = _layers_of(DOC.read_text())


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


@functools.cache  # one parse per file for the whole module, not one per test
def _imports(path: Path) -> frozenset[str]:
    """Every module ``path`` imports, at the top, inside functions or for type checking."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return frozenset(found)


def test_every_module_has_a_layer() -> None:
    missing = [m for m in MODULES if layer_of(m) < 0]
    assert missing == [], f"give these modules a layer in docs/ARCHITECTURE.md: {missing}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_higher_layer(module: str) -> None:
    mine = layer_of(module)
    upward = {
        m: LAYERS[layer_of(m)][0]
        for m in _imports(MODULES[module])
        if m.startswith("fruitstream") and layer_of(m) > mine
    }
    assert upward == {}, f"{module} ({LAYERS[mine][0]}) imports from above: {upward}"


def test_the_layer_table_is_read_from_the_architecture_document() -> None:
    names = [name for name, _ in LAYERS]
    assert names[0] == "errors" and names[-1] == "entrypoints"
    assert ("service", ("service",)) in LAYERS
    assert names.index("service") < names.index("wiring")  # bootstrap builds the service


def _unit(module: str) -> str:
    """The package (or top-level module) a module belongs to: ``fruitstream.bench.openset``
    -> ``bench``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle through distinct nodes, each as the path that closes it (a DFS per node)."""
    found = []
    for start in sorted(edges):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    found.append([*path, start])
                elif nxt not in path and nxt > start:  # each cycle once, from its least node
                    stack.append((nxt, [*path, nxt]))
    return found


def test_no_two_packages_of_a_layer_import_each_other_in_a_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        mine = _unit(module)
        for other in _imports(path):
            if not other.startswith("fruitstream.") or layer_of(other) != layer_of(module):
                continue
            if _unit(other) != mine:
                edges.setdefault(mine, set()).add(_unit(other))
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"bench": {"training"}, "training": {"bench"}}) == [
        ["bench", "training", "bench"]
    ]
    assert _cycles({"a": {"b"}, "b": {"c"}}) == []


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


def _names_from(path: Path, module: str) -> set[str]:
    """The names ``path`` imports from ``module``."""
    return {
        alias.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module == module
        for alias in node.names
    }


def test_the_ui_and_the_api_reach_backends_only_through_the_service() -> None:
    """The composition root builds their service; they take nothing else from it."""
    for module, path in MODULES.items():
        if module.startswith(("fruitstream.entrypoints.ui", "fruitstream.entrypoints.api")):
            assert _names_from(path, "fruitstream.bootstrap") <= {"build_service"}, module


def test_the_service_never_builds_itself() -> None:
    """``bootstrap`` builds the service from settings, never the reverse."""
    for module, path in MODULES.items():
        if module.startswith("fruitstream.service"):
            assert not any(m.startswith("fruitstream.bootstrap") for m in _imports(path)), module


# The service's calls about whose data it is: entrypoints must say who asks.
SCOPED = {"submit", "keep", "session", "once", "progress", "results", "results_page", "sessions"}


def test_every_entrypoint_call_about_someones_data_says_who_asks() -> None:
    """A call of a scoped use case from an entrypoint passes ``caller=`` (the default is the
    operator, for tools and tests): no route or page can forget to scope."""
    missing = []
    for module, path in MODULES.items():
        if not module.startswith("fruitstream.entrypoints"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            target = node.func.value
            on_service = isinstance(target, ast.Attribute) and target.attr == "service"
            on_service = on_service or (isinstance(target, ast.Name) and target.id == "service")
            says = any(k.arg == "caller" for k in node.keywords)
            if on_service and node.func.attr in SCOPED and not says:
                missing.append(f"{module}:{node.lineno} {node.func.attr}")
    assert missing == []


def test_loading_settings_pulls_in_neither_pillow_nor_numpy() -> None:
    import subprocess

    probe = "import sys, fruitstream.config; print(sorted({'PIL', 'numpy'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
