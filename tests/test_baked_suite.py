"""Install a baked project in its own virtual environment and run it: its tests, its entry point.

Slow (a venv and `pip install -r requirements.txt -e .` per answer set, pip's cache makes repeats
cheap) but run by default: it is the only check that the generated project works as
shipped, with its own dependency ranges rather than this environment's pins. The
generated suite uses REDIS_URL when it is set and otherwise starts its own redis-server.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from .baking import InstalledProject, output_tail

# One set that changes every answer that reaches code or packaging. The defaults run every tier
# (`pytest --all`) in tests/test_shipping.py's test_workflow_steps_run_as_written, as the
# generated CI workflow runs them: running them twice would only double the slowest test.
INSTALLED_ANSWER_SETS = [
    pytest.param(
        {
            "project_name": "Kit Bot",
            "project_slug": "kitbot",
            "author_name": "Zoë O'Brien",
            "python_version": "3.13",
        },
        id="kitbot-3.13",
    ),
]
#: The ops tests whose subject is named by the answers: the package run as a process
#: (`python -m <slug>`, its settings), and `new-node` writing into `<slug>/`.
ANSWER_SENSITIVE_OPS_TESTS = ("tests/ops/test_bot_config.py", "tests/ops/test_bot_new_node.py")


def junit_totals(report: Path) -> dict[str, int]:
    """Sum tests/failures/errors/skipped over the JUnit XML that pytest wrote."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    keys = ("tests", "failures", "errors", "skipped")
    return {key: sum(int(suite.get(key, "0")) for suite in suites) for key in keys}


@pytest.mark.slow
@pytest.mark.parametrize("answers", INSTALLED_ANSWER_SETS)
def test_generated_suite_passes_in_its_own_venv(
    install_project: Callable[..., InstalledProject], answers: dict[str, str], tmp_path: Path
) -> None:
    project = install_project(**answers)
    report = tmp_path / "junit.xml"
    # The fast tier (plain `pytest`, what the README gives a node author), and the ops tests
    # that the answers reach; naming an ops file runs it.
    pytest = [str(project.python), "-m", "pytest", "-p", "no:cacheprovider", "tests"]
    pytest += ANSWER_SENSITIVE_OPS_TESTS
    result = project.run(*pytest, f"--junitxml={report}")
    assert result.returncode == 0, output_tail(result)
    totals = junit_totals(report)
    assert totals["tests"] > 0, totals
    assert totals["failures"] == totals["errors"] == totals["skipped"] == 0, totals


@pytest.mark.slow
def test_missing_token_stops_start_up_with_one_line(installed_project: InstalledProject) -> None:
    """`python -m <slug>` without BOT_TOKEN names the setting instead of a traceback.

    Run from the project root as the README says; the baked project has no .env and
    BOT_TOKEN is kept out of the environment by ``child_env``.
    """
    result = installed_project.run(
        str(installed_project.python), "-m", installed_project.slug, timeout=60
    )
    assert result.returncode != 0
    assert "BOT_TOKEN" in result.stderr, output_tail(result)
    assert "Traceback" not in result.stderr, output_tail(result)
