"""No import cycles among dlrun's modules (every import counts, also those inside functions); the task layer on top."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

SRC = REPO / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """dlrun module -> the dlrun modules it imports anywhere in its body."""
    modules = {module_name(p): p for p in (SRC / "dlrun").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_among_dlrun_modules() -> None:
    assert cycles(import_graph()) == []


def test_the_checker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


PARTS = ("data", "models", "objectives", "callbacks", "tracking", "sweeping", "config")
FLOOR = ("dlrun.contracts", "dlrun.errors", "dlrun.logs", "dlrun._upstream")


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_tasks_sit_on_their_shared_modules() -> None:
    graph = import_graph()
    assert {"dlrun.tasks.start", "dlrun.tasks.parts", "dlrun.tasks.trainer"} <= graph["dlrun.tasks.train"]
    assert {"dlrun.tasks.job", "dlrun.tasks.parts"} <= graph["dlrun.tasks.evaluate"]


def test_arrows_point_down() -> None:
    """Parts never import a task or a face; the floor imports no part; models see only torch (and errors)."""
    graph = import_graph()
    faces = {"dlrun.cli", "dlrun.api"}
    for name, imports in graph.items():
        if any(in_package(name, f"dlrun.{part}") for part in PARTS):
            up = {t for t in imports if in_package(t, "dlrun.tasks") or t in faces or in_package(t, "dlrun.browse")}
            assert not up, f"{name} reaches up into {sorted(up)}"
        if name in FLOOR:
            assert all(t in FLOOR for t in imports), f"floor module {name} imports {sorted(imports)}"
        if in_package(name, "dlrun.models"):
            assert all(in_package(t, "dlrun.models") or t in FLOOR for t in imports), f"{name}: {sorted(imports)}"
        if in_package(name, "dlrun.data"):
            assert not any(
                in_package(t, f"dlrun.{p}") for t in imports for p in ("models", "objectives", "callbacks")
            ), name
        if in_package(name, "dlrun.tracking"):
            assert not any(in_package(t, f"dlrun.{p}") for t in imports for p in ("models", "objectives", "data")), name


def test_top_level_is_faces_floor_and_packages() -> None:
    top = sorted(p.stem for p in (SRC / "dlrun").glob("*.py"))
    assert top == ["__init__", "__main__", "_upstream", "api", "cli", "contracts", "errors", "logs", "starter"]
