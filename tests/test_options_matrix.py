"""Every combination of the template's options, baked, linted and fast-tested.

As cookiecutter-django does: the choice options of cookiecutter.json (every question whose
answer is a list) multiplied out, read from the file so a new option (payments, when it lands)
joins the matrix by itself. Each combination is baked and linted (ruff, ruff format, the compose
files through podman-compose, the workflow against its schema); its fast tier (`pytest`, about
15 s, in a venv `uv sync --locked` makes) runs for every combination of the default
python_version, since that answer reaches only the Dockerfile and CI: tests/test_python_matrix.py
runs the fast tier on each Python itself. The ops tier and mypy run on the defaults only
(tests/test_shipping.py, test_generation.py): the options change files around the code, not
the code mypy checks.

Answers the template refuses are refused with one line (tests/test_hooks.py); none of the
current combinations is refused, and the test says so if one becomes so.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from .baking import COOKIECUTTER_JSON, BakedProject, load_hook, output_tail
from .test_shipping import tool

pre_gen = load_hook("pre_gen_project")

CHOICES = {
    name: [str(choice) for choice in value]
    for name, value in COOKIECUTTER_JSON.items()
    if not name.startswith("_") and isinstance(value, list)
}
DEFAULT_PYTHON = CHOICES["python_version"][0]
COMBINATIONS = [
    dict(zip(CHOICES, values, strict=True)) for values in itertools.product(*CHOICES.values())
]


def combination_id(answers: dict[str, str]) -> str:
    return "-".join(f"{name}={value}" for name, value in answers.items())


def test_the_matrix_covers_every_choice_option() -> None:
    assert "python_version" in CHOICES
    assert "monitoring" in CHOICES
    assert len(COMBINATIONS) == len(list(itertools.product(*CHOICES.values())))


@pytest.mark.slow
@pytest.mark.parametrize("answers", COMBINATIONS, ids=map(combination_id, COMBINATIONS))
def test_combination_bakes_lints_and_passes_its_fast_tier(
    answers: dict[str, str], bake: Callable[..., BakedProject], tmp_path: Path
) -> None:
    refusal = pre_gen.check_combination(answers)
    if refusal is not None:
        pytest.skip(f"refused by the template, one line: {refusal}")
    project = bake(project_slug="options_bot", **answers)
    for argv in (
        [tool("ruff"), "check", "--no-cache", "."],
        [tool("ruff"), "format", "--check", "--no-cache", "."],
        [tool("podman-compose"), "config"],
        [tool("podman-compose"), "-f", "docker-compose.yml", "-f", "docker-compose.webhook.yml",
         "config"],
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
         ".github/workflows/ci.yml"],
    ):  # fmt: skip
        result = project.run(*argv, env={"DOMAIN": "bot.example.com"})
        assert result.returncode == 0, output_tail(result)
    if answers["python_version"] != DEFAULT_PYTHON:
        # That answer reaches only the Dockerfile and CI, both checked above; the Python code is
        # the same, and test_python_matrix.py runs it on that very Python. Saves minutes.
        return
    env = {"UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv")}
    synced = project.run(tool("uv"), "sync", "--locked", "--quiet", env=env)
    assert synced.returncode == 0, output_tail(synced)
    tests = project.run(
        tool("uv"), "run", "--locked", "pytest", "-p", "no:cacheprovider", "-q", env=env
    )
    assert tests.returncode == 0, output_tail(tests)


def test_a_yes_no_option_refuses_anything_else_in_one_line() -> None:
    answers = {
        "project_name": "Food Bot",
        "project_slug": "food_bot",
        "description": "A bot.",
        "author_name": "A",
        "author_email": "a@example.com",
        "python_version": "3.12",
        "monitoring": "maybe",
    }
    error = pre_gen.find_error(answers)
    assert error == "monitoring 'maybe' is not offered: answer yes or no"
    assert pre_gen.find_error({**answers, "monitoring": "no"}) is None


def test_a_clashing_combination_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mechanism the payments option (or any later one) uses to refuse a combination."""
    rule = ({"monitoring": "no", "python_version": "3.11"}, "an example rule")
    monkeypatch.setattr(pre_gen, "INCOMPATIBLE", (rule,))
    error = pre_gen.check_combination({"monitoring": "no", "python_version": "3.11"})
    assert error == "monitoring=no, python_version=3.11 cannot go together: an example rule"
    assert "\n" not in error
    assert pre_gen.check_combination({"monitoring": "yes", "python_version": "3.11"}) is None
