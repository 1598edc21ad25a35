"""`python -m <package> new-node NAME`: a new node, registered, wired in and tested.

It writes `nodes/NAME.py` and `tests/test_NAME.py` (from `scaffold_templates.py`), adds
the node's texts to `texts.py` and to every `locales/<language>/bot.ftl` (in English, to
translate), registers the node in `nodes/__init__.py` under the key NAME, and adds it to the
return annotation of the `on_event` of the node that leads there (`--from`, the start node
by default): the flow check refuses a node nothing leads to, so a fresh node must be
reachable to start at all. That node only *declares* the way there; returning
`NAME.Class()` where the user should go is left to you, and the command says where. The
files are edited with the positions `ast` gives, so the bot's own formatting and comments
stay as they are.
"""

from __future__ import annotations

import ast
import importlib
import keyword
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..telegram.definition import BotDefinition
from ..telegram.i18n import FTL_FILE
from .diagram import BEGIN_MARKER
from .scaffold_templates import FTL, NODE, TEST, TEXT_METHODS

#: Exit status for a refused name (a usage error: pick another and retry).
EXIT_REFUSED = 2
#: Longer names make lines of the generated code longer than the linter allows.
MAX_NAME_LENGTH = 30
NAME_RULE = re.compile(r"[a-z][a-z0-9_]*")


class ScaffoldError(Exception):
    """The node can't be made; the message is one line naming the value and the rule."""


@dataclass(frozen=True)
class NewNode:
    """Where a node called `name` goes in a project."""

    name: str
    package: str
    package_dir: Path

    @property
    def cls(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))

    @property
    def nodes_dir(self) -> Path:
        return self.package_dir / "nodes"

    @property
    def module(self) -> Path:
        return self.nodes_dir / f"{self.name}.py"

    @property
    def test(self) -> Path:
        return self.package_dir.parent / "tests" / f"test_{self.name}.py"

    def shown(self, path: Path) -> Path:
        """`path` as the user sees it from the project root."""
        return path.relative_to(self.package_dir.parent)


def is_node_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and bool(NAME_RULE.fullmatch(name)) and name[-1:] != "_"


def suggest(name: str) -> str | None:
    """A node name close to `name` (`Drinks` -> `drinks`, `Side-Dish` -> `side_dish`)."""
    words = re.findall(r"[a-z0-9]+", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower())
    candidate = "_".join(words)[:MAX_NAME_LENGTH].strip("_")
    fits = is_node_name(candidate) and not keyword.iskeyword(candidate)
    return candidate if fits and candidate != name else None


def check_name(node: NewNode, nodes: ModuleType) -> None:
    """Raise ScaffoldError unless `node.name` makes a new module, key and class."""
    name = node.name
    if not is_node_name(name):
        close = suggest(name)
        hint = f"; try {close!r}" if close else ""
        raise ScaffoldError(
            f"{name!r} is not a node name: use a lower-case Python identifier (letters, digits "
            f"and inner underscores, starting with a letter, at most {MAX_NAME_LENGTH} "
            f"characters){hint}"
        )
    if keyword.iskeyword(name):
        raise ScaffoldError(f"{name!r} is a Python keyword: a node's module can't be named so")
    if node.module.exists() or (node.nodes_dir / name).exists():
        raise ScaffoldError(f"{name!r} exists: {node.shown(node.module)} is already there")
    if name in nodes.nodes_dict:
        raise ScaffoldError(f"{name!r} exists: it is already a key of nodes_dict")
    if hasattr(nodes, node.cls) or node.cls in {cls.__name__ for cls in nodes.nodes_dict.values()}:
        raise ScaffoldError(
            f"{name!r} would make class {node.cls}, a name {node.package}.nodes already has"
        )
    if node.test.exists():
        raise ScaffoldError(f"{name!r} exists: {node.shown(node.test)} is already there")


def new_node(definition: BotDefinition[Any, Any], name: str, from_key: str) -> list[str]:
    """Make the node; the lines telling the user what was done and what is left."""
    package, package_dir = definition.package, definition.package_dir()
    nodes = importlib.import_module(f"{package}.nodes")
    node = NewNode(name, package, package_dir)
    check_name(node, nodes)
    source_class = nodes.nodes_dict.get(from_key)
    if source_class is None:
        raise ScaffoldError(
            f"--from {from_key!r} is not a node: use a key of nodes_dict "
            f"({', '.join(sorted(nodes.nodes_dict))})"
        )
    source = node.nodes_dir / f"{source_class.__module__.rsplit('.', 1)[-1]}.py"
    if source_class.__module__ != f"{package}.nodes.{source.stem}" or not source.is_file():
        raise ScaffoldError(f"--from {from_key!r}: its class is not defined in {node.nodes_dir}")
    # Every edit is computed before anything is written: a refusal leaves the project as it was.
    source_text = declare_target(source.read_text(encoding="utf-8"), source_class.__name__, node)
    init = node.nodes_dir / "__init__.py"
    init_text = register(init.read_text(encoding="utf-8"), node)
    fields = {"name": node.name, "cls": node.cls, "package": package}
    texts = package_dir / "texts.py"
    texts_text = add_text_methods(texts.read_text(encoding="utf-8"), node, fields)
    translations = {
        path: add_messages(path, node, fields)
        for path in sorted((package_dir / "locales").glob(f"*/{FTL_FILE}"))
    }
    node.module.write_text(NODE.substitute(fields), encoding="utf-8")
    texts.write_text(texts_text, encoding="utf-8")
    for path, translation in translations.items():
        path.write_text(translation, encoding="utf-8")
    node.test.parent.mkdir(exist_ok=True)
    node.test.write_text(TEST.substitute(fields), encoding="utf-8")
    init.write_text(init_text, encoding="utf-8")
    source.write_text(source_text, encoding="utf-8")
    root = package_dir.parent
    done = [
        f"Created {node.module.relative_to(root)} and {node.test.relative_to(root)}.",
        f"Added its texts to {texts.relative_to(root)} and to every "
        f"{package}/locales/<language>/{FTL_FILE}, in English: translate them there.",
        f"Registered {node.cls} in {init.relative_to(root)} under the key {name!r}.",
        f"{source_class.__name__}.on_event in {source.relative_to(root)} now declares it may "
        f"return {name}.{node.cls}: return `{name}.{node.cls}()` there where users should "
        "get to it.",
    ]
    return done + redraw_diagrams(root, package)


def add_text_methods(text: str, node: NewNode, fields: dict[str, str]) -> str:
    """texts.py with the node's methods at the end of `class Texts`."""
    tree = ast.parse(text)
    texts = next(s for s in tree.body if isinstance(s, ast.ClassDef) and s.name == "Texts")
    methods = TEXT_METHODS.substitute(fields)
    taken = {f.name for f in texts.body if isinstance(f, ast.FunctionDef)}
    clash = sorted(taken & set(re.findall(r"def (\w+)\(", methods)))
    if clash:
        raise ScaffoldError(f"{node.name!r} would add texts.py methods it already has: {clash[0]}")
    lines = text.splitlines(keepends=True)
    end = _end(texts)
    return "".join(lines[:end]) + methods + "".join(lines[end:])


def add_messages(path: Path, node: NewNode, fields: dict[str, str]) -> str:
    """A language's .ftl with the node's messages at its end."""
    text = path.read_text(encoding="utf-8")
    if re.search(rf"^{re.escape(node.name)}-", text, re.MULTILINE):
        raise ScaffoldError(f"{node.name!r} exists: {node.shown(path)} has its messages already")
    return text.rstrip("\n") + "\n" + FTL.substitute(fields)


def register(text: str, node: NewNode) -> str:
    """`nodes/__init__.py` with the node imported, exported and in `nodes_dict`."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, str]] = []  # (line index, lines replaced, new text)
    registry = _assignment(tree, "nodes_dict")
    if not isinstance(registry.value, ast.Dict) or registry.lineno == registry.end_lineno:
        raise ScaffoldError("nodes/__init__.py: nodes_dict is not a dict written over many lines")
    edits.append((_end(registry) - 1, 0, f'    "{node.name}": {node.cls},\n'))
    exported = _assignment(tree, "__all__")
    if isinstance(exported.value, ast.List | ast.Tuple):
        names = [str(e.value) for e in exported.value.elts if isinstance(e, ast.Constant)]
        edits.append(
            (exported.lineno - 1, _end(exported) - exported.lineno + 1, _all(names, node.cls))
        )
    edits.append((_import_line(tree, node.name), 0, f"from .{node.name} import {node.cls}\n"))
    for index, replaced, new in sorted(edits, reverse=True):
        lines[index : index + replaced] = [new]
    return "".join(lines)


def declare_target(text: str, class_name: str, node: NewNode) -> str:
    """A node module's text with `node` added to its class's `on_event` return annotation."""
    tree = ast.parse(text)
    method = next(
        (
            item
            for top in tree.body
            if isinstance(top, ast.ClassDef) and top.name == class_name
            for item in top.body
            if isinstance(item, ast.AsyncFunctionDef) and item.name == "on_event"
        ),
        None,
    )
    if method is None or method.returns is None or isinstance(method.returns, ast.Constant):
        raise ScaffoldError(
            f"{class_name}.on_event has no return annotation to extend: annotate it first"
        )
    lines = text.splitlines(keepends=True)
    returns = method.returns
    # `A | B | None` gets the new node before its `None` ("or stay" reads best last).
    stays = isinstance(returns, ast.BinOp) and _is_none(returns.right)
    end = returns.left if stays and isinstance(returns, ast.BinOp) else returns
    line = lines[_end(end) - 1].encode()  # ast's columns count UTF-8 bytes
    cut = end.end_col_offset or 0
    added = f" | {node.name}.{node.cls}".encode()
    lines[_end(end) - 1] = (line[:cut] + added + line[cut:]).decode()
    return _import_sibling(tree, lines, node.name)


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _import_sibling(tree: ast.Module, lines: list[str], name: str) -> str:
    """`from . import name` added to (or merged into) the module's sibling imports."""
    for top in tree.body:
        if (
            isinstance(top, ast.ImportFrom)
            and top.level == 1
            and top.module is None
            and top.lineno == top.end_lineno
        ):
            siblings = sorted({alias.name for alias in top.names} | {name})
            lines[top.lineno - 1] = f"from . import {', '.join(siblings)}\n"
            return "".join(lines)
    imports = [top for top in tree.body if isinstance(top, ast.ImportFrom) and top.level >= 1]
    later = [top for top in imports if top.level == 1 and top.module is not None]
    if later:
        lines.insert(later[0].lineno - 1, f"from . import {name}\n")
    elif imports:
        lines.insert(_end(imports[-1]), f"from . import {name}\n")
    else:
        last = max(_end(top) for top in tree.body if isinstance(top, ast.Import | ast.ImportFrom))
        lines.insert(last, f"\nfrom . import {name}\n")
    return "".join(lines)


def redraw_diagrams(root: Path, package: str) -> list[str]:
    """Bring the flow diagram up to date in every document that embeds it (a new process:
    this one imported the nodes before the new one existed)."""
    marker = BEGIN_MARKER.format(package=package)
    documents = [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]
    said = []
    for document in documents:
        if document.is_file() and marker in document.read_text(encoding="utf-8"):
            result = subprocess.run(  # noqa: S603 - this interpreter, our own arguments
                [sys.executable, "-m", package, "diagram", "--readme", str(document)],
                cwd=root,
                capture_output=True,
                text=True,
                check=False,
            )
            said.append((result.stdout + result.stderr).strip())
    return said


def _assignment(tree: ast.Module, target: str) -> ast.Assign | ast.AnnAssign:
    for top in tree.body:
        if isinstance(top, ast.AnnAssign) and ast.unparse(top.target) == target:
            return top
        if isinstance(top, ast.Assign) and [ast.unparse(t) for t in top.targets] == [target]:
            return top
    raise ScaffoldError(f"nodes/__init__.py has no {target}: register the node by hand")


def _all(names: list[str], new: str) -> str:
    """`__all__` with `new` added, sorted as ruff wants it (classes first, then the rest)."""
    ordered = sorted({*names, new}, key=lambda item: (not item[:1].isupper(), item))
    one_line = "__all__ = [" + ", ".join(f'"{n}"' for n in ordered) + "]\n"
    if len(one_line) <= 100:
        return one_line
    return "__all__ = [\n" + "".join(f'    "{n}",\n' for n in ordered) + "]\n"


def _import_line(tree: ast.Module, module: str) -> int:
    """The line index where `from .module import Class` goes among the nodes' imports."""
    siblings = [
        top
        for top in tree.body
        if isinstance(top, ast.ImportFrom) and top.level == 1 and top.module is not None
    ]
    if not siblings:
        raise ScaffoldError("nodes/__init__.py imports no node: register the node by hand")
    after = [top for top in siblings if (top.module or "") > module]
    return after[0].lineno - 1 if after else _end(siblings[-1])


def _end(statement: ast.stmt | ast.expr) -> int:
    return statement.end_lineno or statement.lineno


def run_new_node(definition: BotDefinition[Any, Any], name: str, from_key: str) -> int:
    """The command: print what was done, or the one-line reason nothing was."""
    try:
        lines = new_node(definition, name, from_key)
    except ScaffoldError as exc:
        print(f"new-node: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print("\n".join(lines))
    return 0
