"""The Python package's modules import each other one way: read from their ``import``
lines (module level and inside functions alike), the graph of ``python/ferrule/``
has no cycle. Nothing is imported, so this runs without the built extension."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

PACKAGE = Path(__file__).parent.parent / "python" / "ferrule"


def modules() -> Dict[str, Path]:
    """Module name (``ferrule.arbiter``; the package itself is ``ferrule``) -> file."""
    out = {}
    for path in sorted(PACKAGE.glob("*.py")):
        out["ferrule" if path.stem == "__init__" else f"ferrule.{path.stem}"] = path
    return out


def imports(path: Path, known: Set[str]) -> Set[str]:
    """The package's modules that `path` imports. ``from ferrule import x`` names the
    module ``ferrule.x`` when there is one (``_ferrule``, the extension, is not)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: ``from . import x`` / ``from .x import y``
                base = "ferrule" + (f".{base}" if base else "")
            if base != "ferrule" and base not in known:
                continue  # another package, or the extension (``ferrule._ferrule``)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    out.add(sub)
                elif base != "ferrule":
                    out.add(base)  # a name from module ``base``
                elif not alias.name.startswith("_ferrule"):
                    out.add("ferrule")  # a name from the package's ``__init__``
    return out


def graph() -> Dict[str, Set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(path, known) - {name} for name, path in mods.items()}


def find_cycle(edges: Dict[str, Set[str]]) -> Optional[List[str]]:
    """A cycle as a list of modules (the first repeated at the end), or None."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    edges = graph()
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_is_read():
    # The check above proves nothing if no edge is found: a few known ones.
    edges = graph()
    assert "ferrule.arbiter" in edges["ferrule.cli"]
    assert "ferrule.pool" in edges["ferrule.arbiter"]
    assert "ferrule.worker" in edges["ferrule.pool"]
    assert "ferrule.settings" in edges["ferrule"]


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
