"""The project's own import graph, read from the source (ast): every ``import`` and
``from ... import`` of a project module, at module level or inside a function alike."""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from profiles import REPO

PACKAGES = ("flame_pipeline", "assets")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every project module by dotted name -> its file."""
    return {module_name(f): f for pkg in PACKAGES for f in sorted((REPO / pkg).rglob("*.py"))}


def _targets(node: ast.AST) -> list[str]:
    """The modules one import statement loads: each named module, its packages, and for
    ``from package import name`` the submodule ``package.name`` where there is one."""
    named = []
    if isinstance(node, ast.Import):
        named = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        named = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    out = []
    for name in named:
        parts = name.split(".")
        out += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [m for m in out if m in modules()]


@cache
def imports(module: str) -> frozenset[str]:
    """The project modules ``module`` imports anywhere in its file (itself excluded)."""
    tree = ast.parse(modules()[module].read_text())
    return frozenset(t for node in ast.walk(tree) for t in _targets(node) if t != module)


def closure(module: str) -> set[str]:
    """``module`` and every project module it imports, transitively, with their packages."""
    parts = module.split(".")
    todo = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += imports(m)
    return seen
