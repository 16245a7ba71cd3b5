"""The house's layers: every import in orchestrator/ and trainables/ points down (or within its
own layer), and no modules import each other in a loop, TYPE_CHECKING imports included. A new
upward edge or circle fails here with the edge named."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (  # bottom first: a module may import its own layer and those below
    ("trainables", "orchestrator.names"),
    ("orchestrator.search",),
    ("orchestrator.study", "orchestrator.run_folder"),
    (
        "orchestrator.tracking",
        "orchestrator.cluster",
        "orchestrator.report",
        "orchestrator.console",
    ),
    ("orchestrator.session", "orchestrator.failure"),
    ("orchestrator.cli", "orchestrator.__main__"),
)


def modules() -> dict[str, Path]:
    found = {}
    for package in ("orchestrator", "trainables"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from a import b`` counts ``a.b`` when that
    is a module)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    imported.add(full if full in known else node.module)
        graph[name] = {m for m in imported if m in known and m != name}
    return graph


def layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return -1  # the package roots: they import nothing of note


def upward_edges(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps if layer(b) > layer(a))


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import loop found by a depth-first walk, as the modules around it."""
    found, state = [], {}

    def walk(module: str, path: list[str]) -> None:
        state[module] = "open"
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                found.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                walk(dep, path)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            walk(module, [])
    return found


def test_every_module_has_a_layer():
    unplaced = [m for m in import_graph() if layer(m) < 0 and m not in ("orchestrator",)]
    assert not unplaced, f"add these to LAYERS: {unplaced}"


def test_imports_point_down_and_never_loop():
    graph = import_graph()
    assert len(graph) > 60 and "orchestrator.study.pipeline" in graph["orchestrator.session"]
    assert upward_edges(graph) == []
    assert circles(graph) == []


def test_the_check_sees_an_upward_edge_and_a_circle():
    graph = {m: set(deps) for m, deps in import_graph().items()}
    graph["trainables.train"].add("orchestrator.search.ray_stage")
    assert upward_edges(graph) == ["trainables.train -> orchestrator.search.ray_stage"]
    graph["orchestrator.search.rungs"].add("orchestrator.search.ray_stage")
    assert ["orchestrator.search.ray_stage", "orchestrator.search.rungs"] in [
        sorted(set(c)) for c in circles(graph)
    ]
