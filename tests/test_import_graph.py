"""The core's modules import each other without cycles (a cycle makes import order matter and hides design knots)."""

from __future__ import annotations

import ast
from pathlib import Path

import mmflow

ROOT = Path(mmflow.__file__).parent


def _module_imports() -> dict[str, set[str]]:
    """Top-level (import-time) intra-package imports of every module of ``mmflow``."""
    graph = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        edges = set()
        for node in ast.parse(path.read_text()).body:  # module level only: function-level imports run later
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                if base.startswith("mmflow"):
                    edges.add(base)
                    edges.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name.startswith("mmflow"))
        graph[name] = edges
    return {name: {e for e in edges if e in graph and e != name} for name, edges in graph.items()}


def test_no_import_cycle_between_core_modules():
    graph = _module_imports()
    # packages import their children to re-export them: only module -> module edges can form a cycle
    modules = {name for name in graph if not (ROOT.parent / Path(*name.split("."))).is_dir()}
    state: dict[str, int] = {}

    def visit(name, trail):
        state[name] = 1
        for nxt in sorted(graph[name] & modules):
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*trail, name, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, name])
        state[name] = 2

    for name in sorted(modules):
        if name not in state:
            visit(name, [])
