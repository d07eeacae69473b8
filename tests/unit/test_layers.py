"""Architecture rules: each third-party library behind one module; imports go one way, without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mqtt_bridge"

# library -> the only modules (or subpackages, ending in ".") allowed to import it (design §2). The benchmark's
# load generator and baselines are deliberately written like the hand-made scripts they stand for (paho and requests
# used directly), and the benchmark runner talks to its own sink; none of them is part of the product.
OWNERS = {
    "paho": {"mqtt.", "devtools.bench.load", "devtools.bench.baselines"},
    "diskcache": {"storage."},
    "requests": {"api.client", "devtools.bench.baselines", "devtools.bench.runner"},
    "amqtt": {"devtools.broker"},
    "prometheus_client": {"observe.metrics"},
    "selenium": set(),
    "google.protobuf": {"decode.sparkplug_schema"},
    "yaml": {"config.load", "config.dump", "cli.run", "devtools.bench.runner"},
    # Pillow checks and resizes images in `images.checks` only. The demo's simulated camera and the benchmark's
    # chart draw pictures with it; neither is part of the product.
    "PIL": {"images.checks", "devtools.simulator", "devtools.bench.chart"},
}
# modules at the bottom import nothing of ours but each other
FOUNDATION = ("errors", "model.")
# the top: nothing below may import these
TOP = ("cli.", "service", "supervise.", "devtools.")


def _within(name: str, owners: set[str] | tuple[str, ...]) -> bool:
    """`name` is one of `owners`, or inside one of the subpackages among them (entries ending in ".")."""
    return any(name == owner or (owner.endswith(".") and name.startswith(owner)) or name == owner.rstrip(".")
               for owner in owners)


def _ours(imports: set[str]) -> set[str]:
    return {i.removeprefix("mqtt_bridge.") for i in imports if i.startswith("mqtt_bridge.")}


def _is_module(dotted: str) -> bool:
    """`mqtt_bridge.a.b` is a module or subpackage of the package (not a name defined inside one)."""
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


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
                if node.module.startswith("mqtt_bridge"):  # `from mqtt_bridge.decode import auto` names a module
                    imports.update(f"{node.module}.{alias.name}" for alias in node.names
                                   if _is_module(f"{node.module}.{alias.name}"))
        out[name] = imports
    return out


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_layers_library_is_behind_one_module(library: str) -> None:
    """A third-party library is imported only by the module that owns it."""
    importers = {name for name, imports in _modules().items()
                 if any(i == library or i.startswith(library + ".") for i in imports)}
    strays = sorted(name for name in importers if not _within(name, OWNERS[library]))
    assert not strays, f"{library} imported by {strays}"


def test_layers_foundation_imports_nothing_above_it() -> None:
    """errors and model/ import nothing of the package but each other."""
    for name, imports in _modules().items():
        if _within(name, FOUNDATION):
            above = {i for i in _ours(imports) if not _within(i, FOUNDATION)}
            assert not above, f"{name} imports {above}"


def test_layers_nothing_imports_the_top() -> None:
    """Only the CLI and the dev tools wire the top together; the rest never imports service, cli or devtools."""
    for name, imports in _modules().items():
        if _within(name, TOP) or name == "__main__":
            continue
        top = {i for i in _ours(imports) if _within(i, TOP)}
        assert not top, f"{name} imports {top}"


def test_layers_product_never_imports_devtools() -> None:
    """Product code (everything outside devtools/ and `cli.dev`, the one command family that starts them) never
    imports devtools."""
    for name, imports in _modules().items():
        if name.startswith("devtools") or name in {"cli.dev", "__main__"}:
            continue
        dev = {i for i in _ours(imports) if i.startswith("devtools")}
        assert not dev, f"{name} imports {dev}"


# the publisher SDK runs in producers' processes: it must not pull in decoders, Pillow or the bridge's pipeline
SDK_MAY_IMPORT = ("model.", "mqtt.", "transform.identity", "errors")


def _from_within(name: str, allowed: tuple[str, ...]) -> bool:
    """`name` (a module, or a name imported from one: `errors.DecodeError`) lies within one of `allowed`."""
    return any(name == owner.rstrip(".") or name.startswith(owner.rstrip(".") + ".") for owner in allowed)


def test_layers_sdk_imports_only_model_mqtt_and_identity() -> None:
    """sdk/ imports of the package only model/, mqtt/, transform.identity and errors."""
    for name, imports in _modules().items():
        if _within(name, ("sdk.",)):
            beyond = {i for i in _ours(imports) if not _from_within(i, SDK_MAY_IMPORT)}
            assert not beyond, f"{name} imports {beyond}"


def test_layers_identity_imports_only_the_foundation() -> None:
    """transform.identity (which the SDK imports) imports of the package only model/ and errors: nothing heavy."""
    beyond = {i for i in _ours(_modules()["transform.identity"]) if not _from_within(i, FOUNDATION)}
    assert not beyond, f"transform.identity imports {beyond}"


def test_layers_templates_import_nothing_of_config() -> None:
    """routing.templates, the one template grammar, imports only the foundation, so that config/ can use it."""
    beyond = {i for i in _ours(_modules()["routing.templates"]) if not _from_within(i, FOUNDATION)}
    assert not beyond, f"routing.templates imports {beyond}"


def test_layers_cli_dev_imports_devtools_only_when_a_command_runs() -> None:
    """`cli.dev` imports devtools inside its command functions only, so loading the CLI never loads a dev tool
    (and the product runs without the optional embedded broker)."""
    tree = ast.parse((PACKAGE / "cli" / "dev.py").read_text())
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    names = {alias.name for node in top_level if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in top_level if isinstance(node, ast.ImportFrom) and node.module}
    assert not {n for n in names if n.startswith("mqtt_bridge.devtools")}, names
    deferred = {i for i in _modules()["cli.dev"] if i.startswith("mqtt_bridge.devtools")}
    assert deferred, "cli.dev starts the dev tools"


def test_layers_no_import_cycles() -> None:
    """The package's import graph is acyclic (module-level and deferred imports both count)."""
    graph = {name: _ours(imports) for name, imports in _modules().items()}
    graph = {name: {dep for dep in deps if dep in graph and dep != name} for name, deps in graph.items()}
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


def test_layers_emulator_imports_nothing_of_the_product() -> None:
    """The emulator stands in for a server someone else wrote: its modules import only each other, the standard
    library and third-party libraries, never the bridge (so a misreading of the API cannot pass on both sides)."""
    emulator = PACKAGE / "devtools" / "emulator"
    found = sorted(emulator.rglob("*.py"))
    assert found, "no emulator modules found"
    for path in found:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                # a relative import stays inside the emulator only when it does not climb out of its folder
                depth = len(path.relative_to(emulator).parts) - 1
                assert node.level <= depth + 1, f"{path.name} imports {'.' * node.level}{node.module or ''}"
                continue
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            product = [n for n in names if (n == "mqtt_bridge" or n.startswith("mqtt_bridge."))
                       and not n.startswith("mqtt_bridge.devtools.emulator")]
            assert not product, f"{path.relative_to(PACKAGE)} imports {product}"


MAX_MODULE_LINES = 400


def test_layers_every_module_is_at_most_400_lines() -> None:
    """One job per module: none is longer than 400 lines (design §2)."""
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_layers_every_module_and_subpackage_says_what_it_owns() -> None:
    """Every module has a docstring, and every subpackage's `__init__.py` is that docstring (no code hides there)."""
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path.relative_to(PACKAGE)} has no docstring"
        if path.name == "__init__.py" and path.parent != PACKAGE:
            assert len(tree.body) == 1, f"{path.relative_to(PACKAGE)} holds code; subsystems keep it in modules"
