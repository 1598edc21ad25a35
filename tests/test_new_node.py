"""`python -m <slug> new-node NAME` in a fresh bake: the project stays lint-clean and tested.

The scaffolded node, its registration, the annotation it adds to the start node and the
redrawn README diagram must all pass the bake's own gates right away: ruff, mypy and pytest
(the new node's test, and the flow tests that compare the code with the README).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from .baking import BakedProject, output_tail


def test_a_new_node_passes_the_bakes_lint_types_and_tests(
    bake: Callable[..., BakedProject],
) -> None:
    project = bake(project_slug="kitbot")
    made = project.run(sys.executable, "-m", "kitbot", "new-node", "drinks", "--from", "hungry")
    assert made.returncode == 0, output_tail(made)
    assert "Created kitbot/nodes/drinks.py and tests/test_drinks.py." in made.stdout
    assert '"drinks": Drinks,' in project.read("kitbot/nodes/__init__.py")
    hungry = project.path / "kitbot" / "nodes" / "hungry.py"
    source = hungry.read_text(encoding="utf-8")
    assert "| drinks.Drinks | None:" in source
    assert "    hungry --> drinks" in project.read("README.md")
    # The way there, as the command says and the README shows: one more `return` in the node
    # with the most ways out must still pass the shipped lint rules.
    cancel = "        if means(text, texts.button_cancel()):\n"
    assert cancel in source
    way_there = '        if text == "Drinks":\n            return drinks.Drinks()\n'
    hungry.write_text(source.replace(cancel, way_there + cancel), encoding="utf-8")
    for gate in (
        ("ruff", "check", "--no-cache", "."),
        ("ruff", "format", "--check", "--no-cache", "."),
        ("mypy", "--no-incremental", "."),
        (
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_drinks.py",
            "tests/test_bot_flow.py",
        ),
    ):
        result = project.run(sys.executable, "-m", *gate)
        assert result.returncode == 0, output_tail(result)
