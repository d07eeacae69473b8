"""Architecture rules: each third-party library behind one module; imports go one way, without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mqtt_bridge"

# library -> the only modules allowed to import it (design §2). The benchmark's load generator and baselines are
# deliberately written like the hand-made scripts they stand for (paho and requests used directly), and the
# benchmark runner talks to its own sink; none of them is part of the product's data path.
OWNERS = {
    "paho": {"subscriber", "bench.load", "bench.baselines"},
    "diskcache": {"buffer"},
    "requests": {"api", "bench.baselines", "bench.runner"},
    "amqtt": {"broker"},
    "prometheus_client": {"metrics"},
    "selenium": set(),
    "google.protobuf": {"decode.sparkplug_schema"},
    "yaml": {"config", "cli", "bench.runner"},
    # Pillow checks and resizes images in `images` only. The demo's simulated camera (`simulator`) and the
    # benchmark's chart (`bench.runner`) draw pictures with it; neither is on the data path.
    "PIL": {"images", "simulator", "bench.runner"},
}
# modules at the bottom import nothing of ours but each other
FOUNDATION = {"errors", "events"}
# the top: nothing below may import these
TOP = {"cli", "demo", "service"}


def _modules() -> dict[str, set[str]]:
    """module name (dotted, relative to the package) -> imported top-level names and package modules."""
    out: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        imports: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imports.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imports.add(node.module)
                if node.module == "mqtt_bridge":
                    imports.update(f"mqtt_bridge.{alias.name}" for alias in node.names)
        out[name] = imports
    return out


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_layers_library_is_behind_one_module(library: str) -> None:
    """A third-party library is imported only by the module that owns it."""
    importers = {name for name, imports in _modules().items()
                 if any(i == library or i.startswith(library + ".") for i in imports)}
    assert importers <= OWNERS[library], f"{library} imported by {sorted(importers - OWNERS[library])}"


def test_layers_foundation_imports_nothing_above_it() -> None:
    """errors and events import nothing of the package but each other."""
    for name in FOUNDATION:
        ours = {i.removeprefix("mqtt_bridge.") for i in _modules()[name] if i.startswith("mqtt_bridge.")}
        assert ours <= FOUNDATION, f"{name} imports {ours - FOUNDATION}"


def test_layers_nothing_imports_the_top() -> None:
    """Only the CLI wires the top modules together; the rest never imports service, demo or cli."""
    for name, imports in _modules().items():
        if name in TOP or name == "__main__":
            continue
        ours = {i.removeprefix("mqtt_bridge.") for i in imports if i.startswith("mqtt_bridge.")}
        assert not ours & TOP, f"{name} imports {ours & TOP}"


def test_layers_no_import_cycles() -> None:
    """The package's import graph is acyclic (module-level and deferred imports both count)."""
    graph = {name: {i.removeprefix("mqtt_bridge.") for i in imports if i.startswith("mqtt_bridge.")}
             for name, imports in _modules().items()}
    graph = {name: {dep for dep in deps if dep in graph and dep != name} for name, deps in graph.items()}
    graph["decode"] = graph.get("decode", set()) - {d for d in graph if d.startswith("decode.")}  # registry
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in done:
            return
        assert node not in visiting, f"import cycle: {' -> '.join([*path, node])}"
        visiting.add(node)
        for dep in sorted(graph[node]):
            visit(dep, [*path, node])
        visiting.discard(node)
        done.add(node)

    for name in sorted(graph):
        visit(name, [])
