"""The flow of the bot's nodes, as declared in their code, and its copy in the README."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from botnodes.devtools.diagram import flow_graph, readme_block

from {{ cookiecutter.project_slug }}.main import BOT

from .ops.bot_process import PROJECT_ROOT, bot_environment

PACKAGE = "{{ cookiecutter.project_slug }}"
GRAPH = flow_graph(BOT)


def test_the_flow_is_sound() -> None:
    assert GRAPH.problems() == []


def test_each_cart_timer_edge_is_labelled_with_its_own_setting() -> None:
    # The cart's own edges only: another node's timers are that node's tests' business.
    cart_timers = [line for line in GRAPH.mermaid().splitlines() if "hungry -->" in line]
    # The reminder leaves the user in the cart, the expiry takes them to the main menu.
    assert "    hungry --> hungry : after CART_REMINDER_AFTER" in cart_timers
    assert "    hungry --> start : after CART_EXPIRES_AFTER" in cart_timers


def test_the_readme_shows_the_current_flow() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_block(PACKAGE, GRAPH) in readme, (
        f"the Flow diagram in README.md is out of date: run "
        f"`python -m {PACKAGE} diagram --readme README.md`"
    )


@pytest.mark.ops
def test_diagram_prints_the_flow_without_any_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", PACKAGE, "diagram"],
        cwd=tmp_path,
        env=bot_environment({}),  # no BOT_TOKEN, no Redis
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == GRAPH.mermaid()
    assert "    hungry --> start" in result.stdout


@pytest.mark.ops
def test_diagram_updates_a_readme_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    stale = readme_block(PACKAGE, GRAPH).replace("hungry --> start", "hungry --> nowhere")
    readme.write_text(f"# Bot\n\n{stale}\n\nMore text.\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", PACKAGE, "diagram", "--readme", str(readme)],
        cwd=tmp_path,
        env=bot_environment({}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (
        readme.read_text(encoding="utf-8")
        == f"# Bot\n\n{readme_block(PACKAGE, GRAPH)}\n\nMore text.\n"
    )
