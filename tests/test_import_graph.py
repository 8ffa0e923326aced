"""The package's architecture, read from its folders: the sub-packages of keras_sf2f import each
other without a cycle (audio -> data -> models -> training / evaluation / serving), no module
imports a module that imports it back (directly or round a longer loop), and nothing imports
the command-line tools.

The graph is computed from every import statement of every module (with ``ast``: imports at
module level and inside functions both count, since a function-local import is a dependency
all the same). Its nodes are the sub-packages (audio, data, models, ...) and the top-level
modules (files.py, flags.py, runs.py, ...), each its own node. No TensorFlow needed.
"""

from __future__ import annotations

import ast
import os

PACKAGE = "keras_sf2f"
PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           PACKAGE)
# The command-line tools may import anything; nothing may import them.
TOOLS = "cli"


def _node(dotted: str) -> str | None:
    """The graph node of a module inside the package (``keras_sf2f.data.table`` -> ``data``,
    ``keras_sf2f.files`` -> ``files``), None for modules outside it and the package itself."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return parts[1]


def _module_name(path: str) -> str:
    relative = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-len(".py")]
    parts = relative.split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imported_modules(tree: ast.AST, module: str, is_package: bool) -> list:
    """``(imported module, line)`` of every import statement in ``tree``; ``from a import b``
    gives ``a.b`` (b may be a module or a name in a: either way the node is a's or b's,
    which for the package's layout is the same sub-package unless a is the package)."""
    found = []
    for statement in ast.walk(tree):
        if isinstance(statement, ast.Import):
            found += [(alias.name, statement.lineno) for alias in statement.names]
        elif isinstance(statement, ast.ImportFrom):
            base = statement.module or ""
            if statement.level:
                anchor = module.split(".")
                if not is_package:
                    anchor = anchor[:-1]
                anchor = anchor[:len(anchor) - (statement.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found += [(f"{base}.{alias.name}", statement.lineno) for alias in statement.names]
    return found


def import_graph() -> dict:
    """``{node: {imported node: [(file, line), ...]}}`` over the whole package."""
    graph = {}
    for directory, _, names in os.walk(PACKAGE_DIR):
        for name in sorted(names):
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            module = _module_name(path)
            source = _node(module)
            if source is None:  # keras_sf2f/__init__.py
                continue
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            edges = graph.setdefault(source, {})
            for imported, line in _imported_modules(tree, module, name == "__init__.py"):
                target = _node(imported)
                if target is not None and target != source:
                    edges.setdefault(target, []).append(
                        (os.path.relpath(path, os.path.dirname(PACKAGE_DIR)), line))
    return graph


def _package_modules() -> dict:
    """``{dotted module name: (path, is a package's __init__)}`` of every module."""
    modules = {}
    for directory, _, names in os.walk(PACKAGE_DIR):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                modules[_module_name(path)] = (path, name == "__init__.py")
    return modules


def module_graph() -> dict:
    """``{module: {imported module: [(file, line), ...]}}``, one node per file of the package.
    ``from a.b import c`` counts as an import of ``a.b.c`` when that is a module, else of
    ``a.b``; the package's own ``__init__`` (which only sets the kernel default) is left out."""
    modules = _package_modules()
    graph = {}
    for module, (path, is_package) in modules.items():
        if module == PACKAGE:
            continue
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        edges = graph.setdefault(module, {})
        for imported, line in _imported_modules(tree, module, is_package):
            target = imported if imported in modules else imported.rpartition(".")[0]
            if target in modules and target not in (module, PACKAGE):
                edges.setdefault(target, []).append(
                    (os.path.relpath(path, os.path.dirname(PACKAGE_DIR)), line))
    return graph


def find_cycle(graph: dict) -> list | None:
    """One cycle ``[a, b, ..., a]`` of the graph, or None."""
    state = {}  # node -> "open" while on the current path, "done" after

    def visit(node, path):
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, {})):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path)
                if cycle:
                    return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def describe_cycle(graph: dict, cycle: list) -> str:
    lines = [" -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:]):
        where = ", ".join(f"{path}:{line}" for path, line in graph[a][b][:4])
        more = len(graph[a][b]) - 4
        lines.append(f"  {a} -> {b}: {where}" + (f" (+{more} more)" if more > 0 else ""))
    return "\n".join(lines)


def test_no_import_cycle_between_subpackages():
    graph = import_graph()
    assert {"audio", "data", "models", "training", "evaluation", "serving", TOOLS} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between sub-packages:\n" + describe_cycle(graph, cycle)


def test_no_import_cycle_between_modules():
    """A loop of files that import each other (even through a function-local import) is one
    piece of code split in two; the names both need belong in a module below both."""
    graph = module_graph()
    assert "keras_sf2f.evaluation.evaluate" in graph and "keras_sf2f.files" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between modules:\n" + describe_cycle(graph, cycle)


def test_nothing_imports_the_command_line_tools():
    graph = import_graph()
    importers = {node: edges[TOOLS] for node, edges in graph.items() if TOOLS in edges}
    assert not importers, f"only the tools may import keras_sf2f.{TOOLS}: {importers}"


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b": []}, "b": {"c": []}, "c": {}}) is None
    assert find_cycle({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == ["a", "b", "c", "a"]


if __name__ == "__main__":  # prints the graph: python tests/test_import_graph.py
    full = import_graph()
    for source in sorted(full):
        print(f"{source} -> {', '.join(sorted(full[source]))}")
    found = find_cycle(full)
    print(describe_cycle(full, found) if found else "no cycle")
