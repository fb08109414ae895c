"""pgq's modules import each other without cycles, lazy imports included.

The graph is built from the source with ``ast``: every ``import`` and ``from
... import`` anywhere in a module (top level, inside functions, under ``if
TYPE_CHECKING``) is an edge. Importing ``a.b.c`` also imports the packages
``a`` and ``a.b`` (their ``__init__`` runs first), so those are edges too,
except a module's own enclosing packages (already being imported when it runs).
A cycle, even one only a lazy import closes, means two modules that cannot be
understood (or tested, or moved) one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pgq

ROOT = Path(pgq.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py") if not p.relative_to(ROOT).parts[0].startswith("_")}


def _resolve(name: str, modules: dict[str, Path]) -> set[str]:
    """The pgq modules that importing ``name`` runs: its packages and itself (or, for
    ``from package import name``, the submodule when there is one)."""
    found = set()
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix in modules:
            found.add(prefix)
    return found


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                edges |= _resolve(alias.name, modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            edges |= _resolve(source, modules)
            for alias in node.names:  # `from pgq.worker import claim` imports a submodule
                edges |= _resolve(f"{source}.{alias.name}", modules)
    own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    return {e for e in edges - own_packages - {module} if e.startswith("pgq")}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that starts and ends at the same module, or None."""
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

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_pgq_package_has_no_import_cycle() -> None:
    graph = import_graph()
    # The walk saw the subpackages.
    assert {"pgq.worker.worker", "pgq.redis.client", "pgq.queries.enqueue", "pgq.cli.worker"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_lazy_and_package_cycles() -> None:
    # A function-level import closes a cycle as much as a top-level one does.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_lazy_and_type_checking_imports_are_edges(tmp_path: Path) -> None:
    pkg = tmp_path / "pgq"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "leaf.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pgq import top\n"
        "def f():\n    from . import sibling\n")
    (pkg / "sub" / "sibling.py").write_text("")
    (pkg / "top.py").write_text("")
    modules = {_module_name_in(tmp_path, p): p for p in pkg.rglob("*.py")}
    leaf = modules["pgq.sub.leaf"]
    assert imports_of("pgq.sub.leaf", leaf, modules) == {"pgq.top", "pgq.sub.sibling"}
    # Another package's __init__ runs on the way to its module: an edge.
    (pkg / "other").mkdir()
    (pkg / "other" / "__init__.py").write_text("")
    (pkg / "other" / "mod.py").write_text("import pgq.sub.leaf\n")
    modules = {_module_name_in(tmp_path, p): p for p in pkg.rglob("*.py")}
    assert imports_of("pgq.other.mod", modules["pgq.other.mod"], modules) == {"pgq.sub", "pgq.sub.leaf"}


def _module_name_in(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)
