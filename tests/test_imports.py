"""The modules of ``nas`` import each other one way: no cycle among their imports.

The imports are read with ``ast``, not run. Module-level imports decide whether a module
can be imported at all; an import inside a function runs only when it is called, but a
cycle through one still ties the two modules together, so it is refused as well.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nas"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def statements(body: list[ast.stmt], deferred: bool = False) -> Iterator[ast.stmt]:
    """The statements of ``body`` that run on import, into if/try/with/class blocks; with
    ``deferred``, those in functions too. Never ``if TYPE_CHECKING:`` blocks."""
    for node in body:
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from statements(node.orelse, deferred)
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not deferred:
            continue
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from statements([child], deferred)
            elif isinstance(child, ast.ExceptHandler):
                yield from statements(child.body, deferred)


def imported(module: str, node: ast.stmt, known: set[str]) -> list[str]:
    """The ``nas`` modules an import statement loads (a package's ``__init__`` included)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolved against the importing module's package
            pkg = module.split(".")
            is_pkg = (PACKAGE.parent / Path(*pkg) / "__init__.py").is_file()
            pkg = pkg if is_pkg else pkg[:-1]
            pkg = pkg[:len(pkg) - (node.level - 1)]
            base = ".".join([*pkg, base] if base else pkg)
        # `from nas import space` loads nas.space; `from nas.space import X` loads nas.space
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    else:
        return []
    out = []
    for name in names:
        if name != "nas" and not name.startswith("nas."):
            continue
        parts = name.split(".")
        # importing nas.a.b runs nas.a's __init__ first
        out += [".".join(parts[:i]) for i in range(2, len(parts) + 1)
                if ".".join(parts[:i]) in known]
    # A module's own packages are already being imported when it runs: not an edge.
    return [m for m in dict.fromkeys(out) if m != module and not module.startswith(m + ".")]


def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    """Module -> the ``nas`` modules it imports at module level (with ``deferred``, in
    its functions too)."""
    mods = modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = {m for node in statements(tree.body, deferred)
                       for m in imported(name, node, known)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_among_nas_modules():
    graph = import_graph()
    assert {"nas.search.run", "nas.search.setup", "nas.search.config", "nas.hydra_cli"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle among nas modules: " + " -> ".join(cycle)


def test_no_import_cycle_even_through_deferred_imports():
    # An import moved into a function hides a cycle at import time, but the two modules
    # still depend on each other.
    cycle = find_cycle(import_graph(deferred=True))
    assert cycle is None, "import cycle among nas modules (counting imports in functions): " + \
        " -> ".join(cycle)


def test_search_command_imports_flow_one_way():
    graph = import_graph()
    assert "nas.search.config" in graph["nas.search.setup"]
    assert "nas.search.setup" in graph["nas.search.run"]  # at module level, not deferred
    assert not graph["nas.search.config"] & {"nas.search.run", "nas.search.setup", "nas.hydra_cli"}


def test_every_nas_import_names_a_module():
    known = set(modules())
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and not node.level and \
                    (node.module or "").startswith("nas"):
                assert node.module in known, f"{path.name}: imports {node.module}, not a module"


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"a"}}, ["a", "a"]),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set(), "d": {"e"}, "e": {"d"}}, ["d", "e", "d"]),
])
def test_find_cycle(graph, cycle):
    assert find_cycle(graph) == cycle


def test_a_function_level_import_is_not_a_module_level_edge():
    tree = ast.parse("import nas.space\n"
                     "from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n    from nas.search.run import SearchResult\n"
                     "try:\n    from nas.search.study import open_storage\nexcept ImportError:\n    pass\n"
                     "def f():\n    from nas.train import TrainConfig\n")
    known = {"nas", "nas.space", "nas.search", "nas.search.study", "nas.train"}
    edges = {m for node in statements(tree.body) for m in imported("nas.x", node, known)}
    assert edges == {"nas.space", "nas.search", "nas.search.study"}  # a package and its module
    edges = {m for node in statements(tree.body, deferred=True)
             for m in imported("nas.x", node, known)}
    assert edges == {"nas.space", "nas.search", "nas.search.study", "nas.train"}


def test_a_sibling_import_is_an_edge_and_the_own_package_is_not():
    known = {"nas", "nas.latency", "nas.latency.spec", "nas.latency.fingerprint", "nas.space"}
    tree = ast.parse("from nas.latency import fingerprint\nfrom nas.latency.spec import BlockKey\n"
                     "from . import spec\n")
    edges = {m for node in tree.body for m in imported("nas.latency.build", node, known)}
    assert edges == {"nas.latency.fingerprint", "nas.latency.spec"}
    tree = ast.parse("from nas.latency.spec import BlockKey\n")
    assert imported("nas.search", tree.body[0], known) == ["nas.latency", "nas.latency.spec"]
