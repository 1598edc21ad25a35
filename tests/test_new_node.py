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
    made = project.run(sys.executable, "-m", "kitbot", "new-node", "drinks")
    assert made.returncode == 0, output_tail(made)
    assert "Created kitbot/nodes/drinks.py and tests/test_drinks.py." in made.stdout
    assert '"drinks": Drinks,' in project.read("kitbot/nodes/__init__.py")
    assert "| drinks.Drinks:" in project.read("kitbot/nodes/start.py")
    assert "    start --> drinks" in project.read("README.md")
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
