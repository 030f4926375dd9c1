"""Pillbug's modules import one another without a cycle, and pgwire uses the public Session API.

The graph is built with `ast` from every import statement in pillbug/, including those inside
functions (a function-level import hides a cycle from Python, not from the design). `from
pillbug.a import b` counts as an import of `pillbug.a.b` when that is a module, else of
`pillbug.a`; a package's `__init__` is not counted as an importer of its submodules. The layer
contracts themselves are import-linter's (`[tool.importlinter]` in pyproject.toml, `lint-imports`
in `make test`); this test catches any cycle, even one between modules of the same layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pillbug"


def module_names() -> dict[str, Path]:
    names: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The pillbug module `name` refers to: itself, or the nearest enclosing module."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    source = f"{base}.{node.module}" if node.module else base
                else:
                    source = node.module or ""
                targets = [f"{source}.{alias.name}" for alias in node.names]
            for target in targets:
                if not target.startswith("pillbug"):
                    continue
                resolved = resolve(target, modules)
                if resolved is None or resolved == name:
                    continue
                if is_package and resolved.startswith(name + "."):
                    continue
                graph[name].add(resolved)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path = [start]
        colour[start] = GREY
        while stack:
            node, pending = stack[-1]
            if not pending:
                colour[node] = BLACK
                stack.pop()
                path.pop()
                continue
            nxt = pending.pop()
            if colour[nxt] == GREY:
                return path[path.index(nxt):] + [nxt]
            if colour[nxt] == WHITE:
                colour[nxt] = GREY
                path.append(nxt)
                stack.append((nxt, sorted(graph[nxt])))
    return None


def test_graph_sees_modules() -> None:
    graph = import_graph()
    assert "pillbug.sql.session" in graph
    assert "pillbug.kv.txn" in graph["pillbug.sql.session"]


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


if __name__ == "__main__":
    graph = import_graph()
    while (cycle := find_cycle(graph)) is not None:
        print(" -> ".join(cycle))
        graph[cycle[-2]].discard(cycle[-1])


def test_pgwire_uses_public_session_api() -> None:
    """pgwire/ reaches a Session only through its public names (no `session._x`)."""
    private = []
    for path in sorted((PACKAGE / "pgwire").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name == "session":
                private.append(f"{path.name}:{node.lineno}: session.{node.attr}")
    assert not private, private
