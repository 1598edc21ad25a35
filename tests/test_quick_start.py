"""The README's quick start: its commands are the ones the bake prints, and they work.

The first hour of a user is the README's quick start followed word for word, then the
next steps the bake prints. These tests keep the two in the same order, keep commands
that fail on a fresh Debian or Ubuntu out of it (`pip install --user` under PEP 668, a
`pipx install` whose PATH needs a new shell), and run the steps that need no Telegram on
an installed bake: `python -m <slug> chat` and `pre-commit install`.
"""

from __future__ import annotations

import re

import pytest

from .baking import TEMPLATE_DIR, InstalledProject, load_hook, output_tail

post_gen = load_hook("post_gen_project")

README = (TEMPLATE_DIR / "README.md").read_text(encoding="utf-8")


def quick_start_commands() -> list[str]:
    """The commands of the README's "Quick start" code blocks, comments stripped, in order."""
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    lines = (line.split("  #")[0].strip() for block in blocks for line in block.splitlines())
    return [line for line in lines if line]


def printed_commands(slug: str) -> list[str]:
    """The commands the post-generation hook prints for ``slug``, comments stripped."""
    text = post_gen.next_steps(slug, slug, has_compose=True)
    return [line.split("#")[0].strip() for line in text.splitlines() if line.startswith("  ")]


def test_quick_start_installs_what_a_fresh_debian_lacks_and_runs_cookiecutter_with_pipx() -> None:
    commands = quick_start_commands()
    assert commands[0] == (
        "sudo apt-get update && sudo apt-get install -y pipx python3-venv git redis-server"
    )
    assert commands[1] == "pipx run cookiecutter gh:org/botnodes-template"
    assert not [c for c in commands if "pip install --user" in c or "pipx install" in c]


def test_quick_start_follows_the_printed_next_steps_in_order() -> None:
    """chat first (needs no token), then the bot on Telegram, then the tests and git hooks."""
    readme = quick_start_commands()[2:]
    printed = [c for c in printed_commands("food_bot") if c in readme]
    assert readme == printed
    assert readme[:3] == [
        "cd food_bot",
        "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt -e .",
        "python -m food_bot chat",
    ]
    assert readme[-2:] == ["pytest", "pre-commit install"]


@pytest.mark.slow
def test_chat_runs_in_the_installed_bake_without_a_token(
    installed_project: InstalledProject,
) -> None:
    """`python -m <slug> chat` as the quick start runs it: no .env, no BOT_TOKEN."""
    assert not (installed_project.path / ".env").exists()
    result = installed_project.run(
        str(installed_project.python),
        "-m",
        installed_project.slug,
        "chat",
        input_text="hi\n:1\nPizza\n:1\n:quit\n",
        timeout=120,
    )
    assert result.returncode == 0, output_tail(result)
    assert "bot> Hello, alice! Are you hungry?" in result.stdout
    assert "bot> Ordered!" in result.stdout


@pytest.mark.slow
def test_pre_commit_install_works_in_the_installed_bake(
    installed_project: InstalledProject,
) -> None:
    """The bake is a git repository, so the README's `pre-commit install` succeeds in it."""
    result = installed_project.run(str(installed_project.venv / "bin" / "pre-commit"), "install")
    assert result.returncode == 0, output_tail(result)
    hook = installed_project.path / ".git" / "hooks" / "pre-commit"
    assert "pre-commit" in hook.read_text(encoding="utf-8")
