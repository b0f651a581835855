"""The import structure: no circles, nothing imports upward (docs/architecture.md).

Every ``import`` of ``butler`` and ``pipeline`` modules counts, at module level and inside
functions (a lazy import is still an arrow); imports under ``if TYPE_CHECKING:`` do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("butler", "pipeline")

FRAMEWORK = (
    "pipeline.struct", "pipeline.exceptions", "pipeline.config", "pipeline.connections",
    "pipeline.connection_types", "pipeline.task", "pipeline.definitions", "pipeline.pipeline_graph",
    "pipeline.graph", "pipeline.execution", "pipeline.cli",
)
APPLICATIONS = ("pipeline.main_job", "pipeline.report")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        if node.level:
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
    out = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.append(name)
    return out


def _graph() -> nx.DiGraph:
    modules = _modules()
    known = set(modules)
    graph = nx.DiGraph()
    graph.add_nodes_from(known)

    def visit(module: str, path: Path, body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(module, path, node.orelse)
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, path, node, known):
                    graph.add_edge(module, target)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit(module, path, [child])

    for module, path in modules.items():
        visit(module, path, ast.parse(path.read_text()).body)
    return graph


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    """The import graph of butler/ and pipeline/ as it is on disk."""
    return _graph()


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _violations(graph: nx.DiGraph, source: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, b in graph.edges if _in(a, source) and _in(b, forbidden))


def test_no_import_circles(graph):
    """No two modules of butler/ and pipeline/ import each other, directly or around a loop."""
    cycles = [c for c in nx.simple_cycles(graph)]
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c + [c[0]]) for c in cycles[:20])


def test_butler_never_imports_pipeline(graph):
    assert not _violations(graph, ("butler",), ("pipeline",))


def test_image_model_imports_only_butler(graph):
    assert not _violations(graph, ("pipeline.image",), FRAMEWORK + APPLICATIONS + (
        "pipeline.tasks", "pipeline.instruments"))


def test_framework_never_imports_science_or_applications(graph):
    assert not _violations(graph, FRAMEWORK, ("pipeline.tasks",) + APPLICATIONS)


def test_graph_builder_never_imports_execution_and_execution_never_the_cli(graph):
    assert not _violations(graph, ("pipeline.graph", "pipeline.pipeline_graph", "pipeline.definitions",
                                   "pipeline.config"), ("pipeline.execution", "pipeline.cli"))
    assert not _violations(graph, ("pipeline.execution",), ("pipeline.cli",))


def test_tasks_never_import_applications(graph):
    assert not _violations(graph, ("pipeline.tasks", "pipeline.instruments"), APPLICATIONS + ("pipeline.cli",))


def test_the_checker_sees_an_upward_import(tmp_path):
    """The walker finds lazy imports: a function-level import is an arrow too."""
    tree = ast.parse("def f():\n    from pipeline.cli import main\n")
    known = {"butler.x", "pipeline.cli"}
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert _targets("butler.x", Path("butler/x.py"), node, known) == ["pipeline.cli"]
