"""The project's modules import each other without a cycle: every `import` statement counts,
module level or inside a function (a cycle hidden in a function is still a cycle: the order in
which the two modules happen to be first used decides whether it works)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pyiscsid", "pyiscsiadm")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            out[name] = path
    return out


def _imported(node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
    """The project modules an import statement names (`from pkg import mod` names pkg.mod)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if node.level or node.module is None:
        raise AssertionError(f"relative import at line {node.lineno}: use absolute imports")
    out = {node.module} & modules
    out |= {f"{node.module}.{a.name}" for a in node.names} & modules
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= _imported(node, set(modules))
        # a package's own __init__ runs before any of its modules: not an edge worth a cycle
        graph[name] = {m for m in edges if m != name and m not in PACKAGES}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert "pyiscsid.kernel_session" in graph and "pyiscsiadm.main" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_sees_cycles_inside_functions(tmp_path: Path) -> None:
    a = "def f():\n    from pyiscsid import b\n"
    b = "import pyiscsid.a\n"
    modules = {"pyiscsid.a", "pyiscsid.b"}
    graph = {}
    for name, text in (("pyiscsid.a", a), ("pyiscsid.b", b)):
        graph[name] = set().union(
            *(
                _imported(n, modules)
                for n in ast.walk(ast.parse(text))
                if isinstance(n, ast.Import | ast.ImportFrom)
            )
        )
    assert find_cycle(graph) == ["pyiscsid.a", "pyiscsid.b", "pyiscsid.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None
