"""The tree's rule: the library never imports the bot, and imports go round in no circle.

botnodes (with its runtime, dev tools and test client) is vendored: a template update replaces
it whole. If it imported the bot's package, an update would have to know the bot's modules and
the bot's edits could break the library. The bot hands what the library needs over instead
(a `BotDefinition`). A circle of imports makes the start-up order matter and a module
impossible to read alone; the nodes are the one exception, since a state machine's nodes name
each other (they import each other's modules, and name the classes only inside functions).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = "botnodes"


def bot_packages() -> list[str]:
    """The bot's own packages: every package at the project root but the library and tests."""
    return sorted(
        path.parent.name
        for path in ROOT.glob("*/__init__.py")
        if path.parent.name not in {LIBRARY, "tests"}
    )


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterator[str]:
    """The absolute names of the modules `path` imports (`from . import x` included)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    """Each module of the library and the bot, and the ones of them it imports."""
    sources = {
        module_name(path): path
        for package in (LIBRARY, *bot_packages())
        for path in (ROOT / package).rglob("*.py")
    }
    return {
        name: {target for target in imports(path) if target in sources and target != name}
        for name, path in sources.items()
    }


def circles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that import each other round a circle (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in edges[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:  # `module` heads a group: it is on the stack above it
            top = stack.index(module)
            group = set(stack[top:])
            del stack[top:]
            if len(group) > 1:
                found.append(group)

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_the_project_has_one_bot_package_beside_the_library() -> None:
    assert len(bot_packages()) == 1, bot_packages()


def test_the_library_imports_nothing_of_the_bot() -> None:
    bot = tuple(bot_packages())
    offending = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        if module.split(".")[0] == LIBRARY
        for target in sorted(targets)
        if target.split(".")[0] in bot
    ]
    assert offending == []


def test_no_circle_of_imports_but_the_nodes_own() -> None:
    nodes = {f"{package}.nodes" for package in bot_packages()}
    loops = [
        sorted(group)
        for group in circles(graph())
        if not all(module.rpartition(".")[0] in nodes or module in nodes for module in group)
    ]
    assert loops == []


def test_the_checks_see_a_circle_and_a_bot_import() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [{"a", "b", "c"}]
    assert any(
        target.split(".")[0] in bot_packages() for targets in graph().values() for target in targets
    ), "the graph finds no import of the bot at all: the checks would see nothing"
