"""The import layers, read from the source: no module imports upward, and the domain imports no
web framework.

    settings, naming, db  <-  models  <-  resolvers  <-  schema, rest_shim, services, auth,
                                                         faults, limits, ws, ws_protocol,
                                                         route_index, ui  <-  app, cli

A module may import its own layer and the layers below it. `runwatch/resolvers/` and
`runwatch/models/` import nothing from starlette, strawberry or graphql. Every `import` counts,
wherever it is written (a function-level or `TYPE_CHECKING` import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import runwatch

PACKAGE = Path(runwatch.__file__).parent
WEB = ("starlette", "strawberry", "graphql")
DOMAIN = ("runwatch.models", "runwatch.resolvers")

# The first name that matches (longest prefix first) gives a module its layer.
LAYERS = {
    "runwatch": 0,  # the package itself: `__version__`
    "runwatch.settings": 0,
    "runwatch.naming": 0,
    "runwatch.db": 0,
    "runwatch.client": 0,  # the loaders' client: imports only itself (test below)
    "runwatch.malloc": 0,  # the C allocator of long-lived processes (serve, worker)
    "runwatch.models": 1,
    "runwatch.metrics": 2,  # Prometheus metrics: the lifecycle counts its transitions there
    "runwatch.resolvers": 2,
    "runwatch.schema": 3,
    "runwatch.rest_shim": 3,
    "runwatch.rest_shim.watcher_input": 3,  # the Watcher wire's lax reading (pydantic)
    "runwatch.services": 3,
    "runwatch.auth": 3,
    "runwatch.faults": 3,
    "runwatch.limits": 3,
    "runwatch.ws": 3,
    "runwatch.ws_protocol": 3,  # uvicorn's socket protocol, lighter (`runwatch serve`)
    "runwatch.route_index": 3,  # the route table indexed by first path segment (the app's)
    "runwatch.demo": 3,  # seeds through the resolvers, for `runwatch demo`
    "runwatch.ui": 3,
    "runwatch.app": 4,
    "runwatch.cli": 4,
    "runwatch.supervisor": 4,  # several processes per host (`serve --workers N`)
}

# Known violations, each naming the work that removes it. An entry that no longer matches an
# import fails the test, so that it is deleted with the fix.
ALLOWED: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        # "runwatch" itself is the package's `__init__`, not a prefix of every module.
        if module == prefix or (prefix != "runwatch" and module.startswith(prefix + ".")):
            return LAYERS[prefix]
    return None


def imports_of(path: Path) -> set[str]:
    """Every module an `import` statement of this file names (absolute names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module_name(path).split(".")
                if path.name != "__init__.py":
                    base.pop()
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            # `from runwatch.resolvers import runs` imports the module runwatch.resolvers.runs
            names.update(f"{prefix}.{alias.name}" for alias in node.names
                         if (PACKAGE.parent / Path(*f"{prefix}.{alias.name}".split("."))
                             ).with_suffix(".py").exists())
    return names


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def import_edges() -> set[tuple[str, str]]:
    return {(module_name(path), name) for path in sources() for name in imports_of(path)}


def upward(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    found = set()
    for importer, imported in edges:
        if not imported.startswith("runwatch"):
            continue
        low, high = layer_of(importer), layer_of(imported)
        if low is not None and high is not None and high > low:
            found.add((importer, imported))
    return found


def web_in_domain(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(importer, imported) for importer, imported in edges
            if importer.startswith(DOMAIN) and imported.split(".")[0] in WEB}


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in map(module_name, sources()) if layer_of(m) is None)
    assert not unplaced, f"give these modules a layer in LAYERS: {unplaced}"


def test_no_module_imports_upward():
    found = upward(import_edges())
    unexpected = sorted(found - set(ALLOWED))
    assert not unexpected, "\n".join(
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})" for a, b in unexpected)
    stale = sorted(set(ALLOWED) - found)
    assert not stale, f"these allowed violations are gone; delete their entries: {stale}"


def test_the_domain_imports_no_web_framework():
    found = web_in_domain(import_edges())
    assert not found, "\n".join(f"{a} imports {b}" for a, b in sorted(found))


def test_the_checks_see_a_violation(tmp_path):
    """Guards the checks themselves: the parser sees function-level and relative imports,
    and both rules flag what they should."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from runwatch.schema import build_schema\n"
                      "    import strawberry\n")
    names = imports_of(source)
    assert {"runwatch.schema", "strawberry"} <= names
    assert imports_of(PACKAGE / "schema" / "export.py") >= {"runwatch.schema"}
    edges = {("runwatch.resolvers.runs", "runwatch.schema"),
             ("runwatch.models.run", "strawberry"), ("runwatch.app", "runwatch.models")}
    assert upward(edges) == {("runwatch.resolvers.runs", "runwatch.schema")}
    assert web_in_domain(edges) == {("runwatch.models.run", "strawberry")}
    # `from runwatch.resolvers import runs` names the module it imports
    assert "runwatch.resolvers.runs" in imports_of(PACKAGE / "schema" / "run.py")


SCHEMA = "runwatch.schema"


def module_level_imports(path: Path) -> set[str]:
    """The modules imported by the statements at a module's top level (outside functions and
    `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_schema_imports_only_at_module_level():
    """No function-level or `TYPE_CHECKING` import dodges a cycle between schema modules (a
    relation pointing up the import order names its type with a `strawberry.LazyType`)."""
    hidden = []
    for path in sorted((PACKAGE / "schema").glob("*.py")):
        everywhere = {n for n in imports_of(path) if n.startswith("runwatch")}
        top = module_level_imports(path)
        hidden += [f"{module_name(path)} imports {name} inside a function or a condition"
                   for name in sorted(everywhere - top)
                   if not any(name == t or name.startswith(t + ".") for t in top)]
    assert not hidden, "\n".join(hidden)


def test_the_schema_modules_import_in_one_order():
    """No circle of imports between the schema's modules (the package's `__init__`, which
    composes the roots, aside)."""
    graph: dict[str, set[str]] = {}
    for importer, imported in import_edges():
        if importer.startswith(SCHEMA + ".") and imported.startswith(SCHEMA + "."):
            graph.setdefault(importer, set()).add(imported)
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, "import circle: " + " -> ".join((*trail, module))
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, (*trail, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_the_client_imports_nothing_of_the_server():
    """`runwatch.client` runs inside loaders: it imports only itself (and httpx)."""
    found = sorted((a, b) for a, b in import_edges() if a.startswith("runwatch.client")
                   and b.startswith("runwatch") and not b.startswith("runwatch.client"))
    assert not found, found
