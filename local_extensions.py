"""Jinja filters for cookiecutter.json: derive project_slug, and refuse bad answers early.

Cookiecutter imports this module itself (``_extensions`` in cookiecutter.json; it puts the
template folder on ``sys.path`` while it renders), so these filters run inside cookiecutter:

- ``package_name`` turns the project name into the default project_slug.
- ``check_answers`` runs the checks of ``hooks/pre_gen_project.py`` right after the last
  question, before anything is written. A refusal raised from here reaches cookiecutter's
  command line as one line and exit status 1; a failing hook cannot do that, because
  cookiecutter logs a hook's failure with a traceback. The hook still runs the same checks,
  for answers that skip the questions (``--replay``).

Both filters are the hook's own functions, loaded from its file, so there is one set of
rules.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from cookiecutter.exceptions import FailedHookException  # type: ignore[import-untyped]
from jinja2 import Environment
from jinja2.ext import Extension

_PRE_GEN_HOOK = Path(__file__).resolve().parent / "hooks" / "pre_gen_project.py"


def _load_checks() -> ModuleType:
    """Import hooks/pre_gen_project.py by path: hooks/ is a folder of scripts, not a package."""
    spec = importlib.util.spec_from_file_location("botnodes_template_checks", _PRE_GEN_HOOK)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the answer checks from {_PRE_GEN_HOOK}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_checks = _load_checks()


class RefusedAnswer(FailedHookException):  # type: ignore[misc]
    """An answer the template refuses; cookiecutter's CLI prints it as one line and exits 1.

    A subclass of the exception cookiecutter's CLI reports without a traceback; the name
    says what really happened.
    """


def package_name(project_name: str) -> str:
    """Return the default project_slug for ``project_name``: always one the checks accept."""
    slug: str = _checks.suggest_slug(project_name)
    return slug


def check_answers(answers: Mapping[str, object]) -> str:
    """Raise RefusedAnswer with one ``ERROR:`` line for the first bad answer; else "yes"."""
    error = _checks.find_error({key: str(value) for key, value in answers.items()})
    if error is not None:
        raise RefusedAnswer(f"ERROR: {error}")
    return "yes"


class AnswersExtension(Extension):
    """Adds the ``package_name`` and ``check_answers`` filters to cookiecutter's Jinja."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["package_name"] = package_name
        environment.filters["check_answers"] = check_answers
