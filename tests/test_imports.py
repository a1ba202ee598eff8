"""The import graph of both packages: no cycles, the installer never imports the builder, and
nothing imports a command line module but its package's `__main__`.

The graph is read from the source with ast, imports inside functions included (a lazy import
is still a dependency); imports under `if TYPE_CHECKING:` are left out, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

REPO = Path(__file__).resolve().parent.parent
ROOTS = {"cosyinstall": REPO / "installer" / "cosyinstall", "cosybuild": REPO / "builder" / "cosybuild"}


def _modules() -> Dict[str, Path]:
    found = {}
    for top, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = [top, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, known: Set[str]) -> Set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
            for stmt in node.body for n in ast.walk(stmt)}
    targets: Set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = base + "." + alias.name
                targets.add(sub if sub in known else base)
    # `import a.b.c` depends on a.b.c; keep only this repository's modules.
    return {t for t in targets if t in known and t != name}


def _graph() -> Dict[str, Set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as a path a -> ... -> a, or [] when the graph is acyclic."""
    state: Dict[str, int] = {}  # 1 on the current path, 2 done
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_graph_is_read() -> None:
    graph = _graph()
    # A sanity anchor, so an empty or misread graph cannot pass the checks below.
    assert "cosyinstall.tree" in graph["cosyinstall.apply"]
    assert any(dep.startswith("cosyinstall.") for dep in graph["cosybuild.pack"])


def test_no_import_cycles() -> None:
    cycle = _cycle(_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_installer_never_imports_the_builder() -> None:
    bad = {name: sorted(d for d in deps if d.split(".")[0] == "cosybuild")
           for name, deps in _graph().items() if name.startswith("cosyinstall")}
    assert not {k: v for k, v in bad.items() if v}


def test_only_main_imports_the_command_line() -> None:
    users = {name: sorted(d for d in deps if d.rpartition(".")[2] == "cli")
             for name, deps in _graph().items() if not name.endswith("__main__")}
    assert not {k: v for k, v in users.items() if v}


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
