"""`new-node` and `diagram` on a copy of the project: refusals, edits, and a broken flow.

Each test runs the commands on its own copy of the package (in `tmp_path`), so nothing they
write or break can reach the project itself.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from {{ cookiecutter.project_slug }}.main import BOT

from .bot_process import PROJECT_ROOT, bot_environment

PACKAGE = "{{ cookiecutter.project_slug }}"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's code and README, to scaffold in or break."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in (PACKAGE, "botnodes"):
        shutil.copytree(PROJECT_ROOT / folder, tmp_path / folder, ignore=skip)
    (tmp_path / "tests").mkdir()
    shutil.copy(PROJECT_ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def run(project: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = bot_environment(settings)
    env["PYTHONPATH"] = str(project)  # the copy, not the project
    return subprocess.run(
        [sys.executable, "-m", PACKAGE, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def snapshot(project: Path) -> dict[str, str]:
    return {
        str(path.relative_to(project)): path.read_text(encoding="utf-8")
        for path in sorted(project.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


RULE = (
    "use a lower-case Python identifier (letters, digits and inner underscores, starting with "
    "a letter, at most 30 characters)"
)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["Drinks"], f"new-node: 'Drinks' is not a node name: {RULE}; try 'drinks'"),
        (["9lives"], f"new-node: '9lives' is not a node name: {RULE}"),
        (["tea-time"], f"new-node: 'tea-time' is not a node name: {RULE}; try 'tea_time'"),
        (["SideDish"], f"new-node: 'SideDish' is not a node name: {RULE}; try 'side_dish'"),
        (["d" * 31], f"new-node: '{'d' * 31}' is not a node name: {RULE}; try '{'d' * 30}'"),
        (["class"], "new-node: 'class' is a Python keyword: a node's module can't be named so"),
        (["node"], f"new-node: 'node' would make class Node, a name {PACKAGE}.nodes already has"),
        (
            ["tea", "--from", "nowhere"],
            "new-node: --from 'nowhere' is not a node: use a key of nodes_dict "
            f"({', '.join(sorted(BOT.nodes_dict))})",
        ),
    ],
)
def test_new_node_refuses_in_one_line_and_writes_nothing(
    project: Path, args: list[str], line: str
) -> None:
    before = snapshot(project)
    result = run(project, "new-node", *args)
    assert (result.returncode, result.stderr, result.stdout) == (2, line + "\n", "")
    assert snapshot(project) == before


def test_new_node_refuses_a_name_that_exists(project: Path) -> None:
    result = run(project, "new-node", "hold")
    assert result.returncode == 2
    assert result.stderr.startswith("new-node: 'hold' exists: ")
    assert result.stderr.endswith(f"{PACKAGE}/nodes/hold.py is already there\n")
    made = run(project, "new-node", "tea")
    assert made.returncode == 0, made.stderr
    again = run(project, "new-node", "tea")
    assert (again.returncode, again.stderr.count("\n")) == (2, 1)
    assert "'tea' exists" in again.stderr


def test_new_node_registers_wires_and_draws_the_node(project: Path) -> None:
    made = run(project, "new-node", "tea_break", "--from", "hungry")
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines() == [
        f"Created {PACKAGE}/nodes/tea_break.py and tests/test_tea_break.py.",
        f"Added its texts to {PACKAGE}/texts.py and to every "
        f"{PACKAGE}/locales/<language>/bot.ftl, in English: translate them there.",
        f"Registered TeaBreak in {PACKAGE}/nodes/__init__.py under the key 'tea_break'.",
        f"Hungry.on_event in {PACKAGE}/nodes/hungry.py now declares it may return "
        "tea_break.TeaBreak: return `tea_break.TeaBreak()` there where users should get to it.",
        f"Updated the flow diagram in {project / 'README.md'}",
    ]
    registry = (project / PACKAGE / "nodes" / "__init__.py").read_text(encoding="utf-8")
    assert "from .tea_break import TeaBreak\n" in registry
    exported = registry.split("__all__ = [", 1)[1].split("]", 1)[0]
    assert '"TeaBreak"' in exported
    assert '    "tea_break": TeaBreak,\n}' in registry
    hungry = (project / PACKAGE / "nodes" / "hungry.py").read_text(encoding="utf-8")
    # Whatever else Hungry imports and may return (your nodes too), tea_break joins them.
    siblings = next(line for line in hungry.splitlines() if line.startswith("from . import "))
    assert "tea_break" in siblings.removeprefix("from . import ").split(", ")
    assert "| tea_break.TeaBreak | None:" in hungry
    texts = (project / PACKAGE / "texts.py").read_text(encoding="utf-8")
    assert '        return Text("tea_break-got", {"note": note})\n\n\n#: ' in texts
    for language in ("en", "ru"):
        ftl = (project / PACKAGE / "locales" / language / "bot.ftl").read_text(encoding="utf-8")
        assert ftl.endswith("tea_break-got = Got { $note }\n")
    diagram = run(project, "diagram")
    assert diagram.returncode == 0, diagram.stderr
    assert "    hungry --> tea_break\n" in diagram.stdout
    assert "    tea_break --> start\n" in diagram.stdout
    assert diagram.stdout in (project / "README.md").read_text(encoding="utf-8")


def test_diagram_refuses_a_flow_with_an_unregistered_node_like_run(project: Path) -> None:
    registry = project / PACKAGE / "nodes" / "__init__.py"
    text = registry.read_text(encoding="utf-8")
    registry.write_text(text.replace('    "hold": Hold,\n', ""), encoding="utf-8")
    line = (
        "Configuration error: node 'start' may return Hold, which is not in nodes_dict: "
        "register it\n"
    )
    for args in (["diagram"], ["diagram", "--readme", "README.md"]):
        result = run(project, *args)
        assert (result.returncode, result.stderr, result.stdout) == (2, line, "")
    ran = run(project, "run", BOT_TOKEN="123:never-used")  # refused before any request
    assert ran.returncode == 2
    assert ran.stderr.splitlines()[-1] == line.rstrip("\n")
