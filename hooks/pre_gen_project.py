"""Refuse answers that would generate a broken project, before any file is written.

Cookiecutter renders this file with Jinja and runs it in the new project folder; when it
exits non-zero, cookiecutter deletes that folder, so a refused answer leaves nothing behind.
The answers reach the code only inside ``main()``, as JSON in a raw string literal, so the
module imports cleanly in the template's unit tests and quotes or backslashes in an answer
cannot break the script. Every check is a pure function of its input: no randomness, no
clock, so re-generating a project (cruft update) yields the same files.

``suggest_slug`` turns any text into a slug these checks accept; cookiecutter.json derives
the default project_slug with it (through local_extensions.py), and every refusal of a
project_slug ends with its suggestion. It uses python-slugify, a dependency of cookiecutter
itself, so it is importable wherever cookiecutter runs this hook.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
from collections.abc import Mapping

from slugify import slugify

# The choices offered in cookiecutter.json; a template test keeps the two in step.
SUPPORTED_PYTHON_VERSIONS = ("3.12", "3.11", "3.13")

# Yes/no options: what each adds to the bake (hooks/post_gen_project.py OPTIONAL_PATHS removes
# the files of an option answered "no"). The payments option joins here when it lands.
YES_NO_OPTIONS = ("monitoring",)

# Answer combinations the template refuses, as (options and the answers that clash, why): each
# rule is checked by check_combination and reported as one line. None clash yet: monitoring
# works with every other answer. Payments, for one, will add its rule here if it needs one.
INCOMPATIBLE: tuple[tuple[dict[str, str], str], ...] = ()

# Fixed rather than read from keyword.softkwlist: that list grows with the Python running
# cookiecutter ("type" arrived in 3.12), and the same answer must not pass on one machine
# and fail on another. A soft keyword is a legal module name, but `import match` next to a
# `match` statement reads as a bug, so these are refused too.
SOFT_KEYWORDS = frozenset({"_", "case", "match", "type"})

# Top-level modules the generated project imports, is built or tested with, or ships
# itself. A package of the same name would be imported instead of (or fight with) them.
PROJECT_MODULES = frozenset(
    {
        "aiogram",
        "aiohttp",
        "annotated_types",
        "botnodes",
        "conftest",
        "bot_process",
        "magic_filter",
        "mypy",
        "pip",
        "prometheus_client",
        "pydantic",
        "pydantic_core",
        "pydantic_settings",
        "pytest",
        "pytest_asyncio",
        "redis",
        "ruff",
        "setuptools",
        "test",
        "tests",
        "typing_extensions",
        "yarl",
    }
)

SLUG_RULE = "use lower-case letters, digits and underscores, starting with a letter"
# Long enough for any sensible name; a folder name of hundreds of characters fails to be
# written (255 bytes on most file systems) and makes every import line unreadable.
MAX_SLUG_LENGTH = 50
# What suggest_slug adds: in front of a slug that starts with a digit, after one that is a
# keyword or a module name, and alone when nothing in the text transliterates to a letter.
# Both made-up names sort after "botnodes" (a plain "bot" would not), so the bake's own
# import order, where botnodes comes first, holds for them.
SLUG_PREFIX = "my_"
SLUG_SUFFIX = "_bot"
FALLBACK_SLUG = "my_bot"
# Apostrophes vanish rather than split a word: "Joe's Pizza" is joes_pizza, not joe_s_pizza.
_APOSTROPHES = (("'", ""), ("\u2019", ""), ("`", ""))
_SLUG_RE = re.compile(r"[a-z][a-z0-9_]*")
# Local part, one "@", a domain with at least one dot; no spaces, quotes or backslashes
# (it lands unescaped in a quoted TOML string). Deliberately rough otherwise: a stricter
# check refuses real addresses.
_EMAIL_RE = re.compile(r'[^@\s"\\]+@[^@\s."\\]+(\.[^@\s."\\]+)+')
# Characters that would need escaping in the TOML, YAML and Markdown the answers land in.
_UNSAFE_TEXT_RE = re.compile(r'["\\\x00-\x1f\x7f]')


def name_clash(slug: str) -> str | None:
    """Return what ``slug`` would be mistaken for or shadow when imported, or None."""
    if keyword.iskeyword(slug):
        return "is a Python keyword"
    if slug in SOFT_KEYWORDS:
        return "is a Python soft keyword"
    if slug in PROJECT_MODULES:
        return f"shadows the module {slug!r} that the project imports"
    if slug in sys.stdlib_module_names:
        return f"shadows the standard-library module {slug!r}"
    return None


def suggest_slug(text: str) -> str:
    """Return a valid project_slug made from ``text`` (a project name or a refused slug).

    python-slugify transliterates ("Pizza Café" is pizza_cafe, "Привет" privet) and keeps
    only ASCII letters, digits and single underscores. What it leaves is then made
    importable: "my_" in front of a leading digit ("2 Fast Pizza" is my_2_fast_pizza),
    "_bot" after a keyword or a module name ("Test" is test_bot), "my_bot" for a text with
    no letter or digit at all (emoji, punctuation); cut at a word to MAX_SLUG_LENGTH.
    """
    slug = slugify(
        text,
        separator="_",
        replacements=_APOSTROPHES,
        max_length=MAX_SLUG_LENGTH - max(len(SLUG_PREFIX), len(SLUG_SUFFIX)),
        word_boundary=True,
    )
    if not slug:
        return FALLBACK_SLUG
    if not slug[0].isalpha():
        return SLUG_PREFIX + slug
    if name_clash(slug) is not None:
        return slug + SLUG_SUFFIX
    return slug


def check_project_slug(slug: str) -> str | None:
    """Return why ``slug`` cannot be the project's folder and package name, or None.

    The slug is imported (`python -m <slug>`), so it has to be an identifier that cannot be
    mistaken for, or shadow, anything the project needs. Upper case and non-ASCII are
    refused because PEP 8 package names are lower case and because case-insensitive file
    systems would make `Food_Bot` and `food_bot` the same folder. The message ends with a
    slug that would pass, made from the refused one.
    """
    if not slug:
        problem = f"is empty: {SLUG_RULE}"
    elif len(slug) > MAX_SLUG_LENGTH:
        problem = f"is longer than {MAX_SLUG_LENGTH} characters: shorten it"
    elif not slug.isidentifier():
        problem = f"is not a valid Python identifier: {SLUG_RULE}"
    elif not slug.isascii():
        problem = f"is not ASCII: {SLUG_RULE}"
    elif slug != slug.lower():
        problem = f"is not lower case: {SLUG_RULE}"
    elif not _SLUG_RE.fullmatch(slug):
        problem = f"does not start with a letter: {SLUG_RULE}"
    else:
        clash = name_clash(slug)
        if clash is None:
            return None
        problem = f"{clash}: pick another name"
    return f"project_slug {slug!r} {problem}; try {suggest_slug(slug)!r}"


def check_python_version(version: str) -> str | None:
    """Return why ``version`` is not one the Docker image and CI are written for, or None.

    Cookiecutter enforces choices at its prompt, but a replay file or an older cookiecutter
    can pass any string through.
    """
    if version not in SUPPORTED_PYTHON_VERSIONS:
        offered = ", ".join(sorted(SUPPORTED_PYTHON_VERSIONS))
        return f"python_version {version!r} is not offered: choose one of {offered}"
    return None


def check_yes_no(name: str, value: str) -> str | None:
    """Return why a yes/no option's answer is neither, or None (a replay can pass anything)."""
    if value not in ("yes", "no"):
        return f"{name} {value!r} is not offered: answer yes or no"
    return None


def check_combination(answers: Mapping[str, str]) -> str | None:
    """Return why the answers together cannot make a working project (INCOMPATIBLE), or None."""
    for clash, why in INCOMPATIBLE:
        if all(answers.get(name) == value for name, value in clash.items()):
            chosen = ", ".join(f"{name}={value}" for name, value in clash.items())
            return f"{chosen} cannot go together: {why}"
    return None


def check_email(email: str) -> str | None:
    """Return why ``email`` does not look like an e-mail address, or None."""
    if not _EMAIL_RE.fullmatch(email):
        return f"author_email {email!r} is not an e-mail address: use the form name@example.com"
    return None


def check_text(name: str, value: str) -> str | None:
    """Return why a free-text answer would break a generated file, or None.

    Names and descriptions are written into quoted TOML strings (pyproject.toml); a double
    quote, a backslash or a line break there makes the project uninstallable.
    """
    if not value.strip():
        return f"{name} {value!r} is empty: give a short text"
    found = _UNSAFE_TEXT_RE.search(value)
    if found:
        return (
            f"{name} {value!r} contains {found.group()!r}: leave out double quotes, "
            "backslashes and line breaks, they would break pyproject.toml"
        )
    return None


def find_error(answers: Mapping[str, str]) -> str | None:
    """Return the first problem among ``answers`` (one line), or None when all are fine.

    Only the first is reported: one line is easy to read, and fixing it and re-running
    shows the next.
    """
    checks = [
        check_project_slug(answers["project_slug"]),
        check_python_version(answers["python_version"]),
        # .get: answers replayed from a bake older than the option mean its default, "yes".
        *(check_yes_no(name, answers.get(name, "yes")) for name in YES_NO_OPTIONS),
        check_combination(answers),
        check_email(answers["author_email"]),
        *(
            check_text(name, answers[name])
            for name in ("project_name", "description", "author_name")
        ),
    ]
    return next((error for error in checks if error is not None), None)


def main() -> int:
    """Check the rendered answers; print one ``ERROR:`` line and fail on the first bad one."""
    answers = json.loads(
        r"""{{ {
            "project_name": cookiecutter.project_name,
            "project_slug": cookiecutter.project_slug,
            "description": cookiecutter.description,
            "author_name": cookiecutter.author_name,
            "author_email": cookiecutter.author_email,
            "python_version": cookiecutter.python_version,
            "monitoring": cookiecutter.monitoring,
        } | tojson }}"""
    )
    error = find_error(answers)
    if error is not None:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
