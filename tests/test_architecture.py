"""The layering ``docs/topics/architecture.rst`` describes, checked on the source: no
import cycles, an engine that knows no concrete transport and no route builder,
transports that know nothing of routes, brokers or the engine, and type generation that
imports nothing doing I/O."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trio_wsroutes"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import: at module level, in functions, and under ``if TYPE_CHECKING:`` (a
    dependency for the type checker is a dependency of the design too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run (at import time or in a function): not the ones under
    ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for branch in node.orelse:
                yield from _runtime_imports_of(branch)
            continue
        yield from _runtime_imports_of(node)


def _runtime_imports_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _runtime_imports(node)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(*, type_checking: bool = True) -> dict[str, set[str]]:
    """Module -> the package modules it imports (with ``type_checking``, the imports
    for the type checker too)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in _imports(tree) if type_checking else _runtime_imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(name, path.name == "__init__.py", node)
                # "from . import x" imports the submodule x; "from .y import z" imports y.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("trio_wsroutes") and target != name:
                    graph[name].add(target)
    return graph


def test_nothing_inside_imports_the_public_package() -> None:
    # trio_wsroutes/__init__.py only re-exports; modules import each other directly.
    graph = import_graph()
    assert [m for m, targets in graph.items() if "trio_wsroutes" in targets] == []


def test_there_is_no_import_cycle() -> None:
    graph = import_graph()
    del graph["trio_wsroutes"]  # re-exports only (checked above)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                pytest.fail(
                    "import cycle: " + " -> ".join([*stack[stack.index(target) :], target])
                )
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        for target in graph[module]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_engine_knows_no_concrete_transport_and_no_route_builder() -> None:
    reached = _reach(import_graph(), "trio_wsroutes._engine")
    forbidden = {
        "trio_wsroutes._routes",
        "trio_wsroutes._server",
        "trio_wsroutes._serving",
        "trio_wsroutes._admission",
        "trio_wsroutes._transports.native",
        "trio_wsroutes._transports._native_transport",
        "trio_wsroutes._transports.asgi",
        "trio_wsroutes._transports._hypercorn",
    }
    assert not reached & forbidden


@pytest.mark.parametrize(
    "module_name",
    [
        "trio_wsroutes._transports.native",
        "trio_wsroutes._transports._native_transport",
        "trio_wsroutes._transports.asgi",
        "trio_wsroutes._transports._hypercorn",
    ],
)
def test_transports_know_nothing_of_routes_brokers_or_the_engine(module_name: str) -> None:
    reached = _reach(import_graph(), module_name)
    for module in reached:
        assert not module.startswith(
            (
                "trio_wsroutes._routes",
                "trio_wsroutes._spec",
                "trio_wsroutes._broker",
                "trio_wsroutes._engine",
                "trio_wsroutes._server",
                "trio_wsroutes._serving",
                "trio_wsroutes._admission",
                "trio_wsroutes._messages",
            )
        ), f"{module_name} imports {module}"


def _third_party_imports(module: str) -> set[str]:
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    names: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_type_generation_imports_nothing_that_does_io() -> None:
    graph = import_graph(type_checking=False)
    modules = {m for m in graph if m.startswith("trio_wsroutes._typegen")}
    for module in list(modules):
        modules |= _reach(graph, module)
    io_libraries = {"trio", "hypercorn", "websockets", "coredis", "socket", "ssl"}
    for module in sorted(modules):
        assert not _third_party_imports(module) & io_libraries, module
