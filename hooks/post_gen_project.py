"""Tidy the freshly generated project, make it a git repository, say what to do next.

Cookiecutter renders this file with Jinja and runs it with the new project folder as the
working directory. The answers reach the code only inside ``main()``, as JSON in a raw
string literal, so the module imports cleanly in the template's unit tests. Nothing here
reads, creates or prints secrets: the user writes BOT_TOKEN into their own ``.env``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# Left-overs that a developer of the template can have inside the template's project folder
# (by running the generated tests or the bot there) and that cookiecutter would copy into
# every generated project. ".env" matters most: it would carry a real bot token along.
STRAY_NAMES = frozenset(
    {
        ".env",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".venv",
        "__pycache__",
    }
)


def remove_strays(project_dir: Path) -> list[Path]:
    """Delete template left-overs under ``project_dir``; return what was removed, sorted.

    Walks top-down and does not descend into what it removes, so a cache inside a removed
    virtual environment is not visited twice.
    """
    removed: list[Path] = []
    for root, dirs, files in os.walk(project_dir):
        for name in [d for d in dirs if d in STRAY_NAMES or d.endswith(".egg-info")]:
            shutil.rmtree(Path(root, name))
            removed.append(Path(root, name))
            dirs.remove(name)
        for name in [f for f in files if f in STRAY_NAMES]:
            Path(root, name).unlink()
            removed.append(Path(root, name))
    return sorted(removed)


def cd_target(project_dir: Path, user_cwd: Path | None) -> str:
    """Return the path to ``cd`` to from the user's shell: relative when that is shorter.

    Cookiecutter runs this hook inside the project, so the user's own directory is only
    known from the shell's PWD; when it is missing or not above the project, the absolute
    path is always right.
    """
    if user_cwd is not None and project_dir.is_relative_to(user_cwd):
        return str(project_dir.relative_to(user_cwd))
    return str(project_dir)


# What a yes/no option adds to the bake, removed when it is answered "no" (the template keeps
# one copy of every file; the compose file's parts of an option are Jinja blocks). The payments
# option adds its own entry here.
OPTIONAL_PATHS: dict[str, tuple[str, ...]] = {
    "monitoring": ("monitoring",),
}


def remove_unselected(project_dir: Path, answers: dict[str, str]) -> list[str]:
    """Delete the files of every option answered "no"; return their paths, in order."""
    removed = []
    for option, paths in OPTIONAL_PATHS.items():
        if answers.get(option, "yes") != "no":
            continue
        for rel in paths:
            target = project_dir / rel
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            removed.append(rel)
    return removed


FIRST_COMMIT_MESSAGE = "Initial commit from botnodes-template"


def _git(git: str, args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one git command quietly; the caller turns a failure into one line."""
    return subprocess.run(
        [git, *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )


def make_git_repository(project_dir: Path, author_name: str, author_email: str) -> str:
    """Make ``project_dir`` a git repository with a first commit; return one line saying so.

    `pre-commit install` needs a repository, and a first commit lets the user see their own
    changes with `git diff`. The committer is the author from the answers, given on the
    command line, so this works on a machine with no git identity configured and changes
    no configuration. `git add -A` honours the generated .gitignore. Nothing here fails
    the bake: without git, inside another repository, or when a step fails, the line says
    what to do instead.
    """
    git = shutil.which("git")
    if git is None:
        return "git is not installed: install it, then `git init` here before `pre-commit install`"
    inside = _git(git, ["rev-parse", "--show-toplevel"], project_dir)
    if inside.returncode == 0:
        return f"Not made a git repository: it is inside the repository {inside.stdout.strip()}"
    identity = ["-c", f"user.name={author_name}", "-c", f"user.email={author_email}"]
    steps = {
        "init": ["-c", "init.defaultBranch=main", "init", "--quiet"],
        "add": ["add", "--all"],
        "commit": [*identity, "commit", "--quiet", "--message", FIRST_COMMIT_MESSAGE],
    }
    for name, args in steps.items():
        result = _git(git, args, project_dir)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
            return (
                f"git {name} failed ({reason}): make the first commit yourself "
                "(git init, git add --all, git commit)"
            )
    return f"Made it a git repository with a first commit ({FIRST_COMMIT_MESSAGE!r})"


def next_steps(slug: str, cd_path: str, has_compose: bool) -> str:
    """Return the next-steps text printed after generation.

    The commands are the ones the generated README gives, in the order a newcomer needs
    them: first the bot in the terminal (no token, no Telegram), then the real bot, a new
    node, the tests. The Docker route is only offered when the project has a compose file.
    """
    lines = [
        f"Created the bot project {slug!r}. Next steps:",
        "",
        f"  cd {cd_path}",
        "  python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt -e .",
        f"  python -m {slug} chat    # the bot in this terminal: no token, no Telegram",
        "",
        "Run it on Telegram:",
        "  cp .env.example .env    # then set BOT_TOKEN in .env (the token from @BotFather)",
    ]
    if has_compose:
        lines += ["  docker compose up       # the bot and its Redis, in Docker"]
    lines += [
        f"  python -m {slug}    # or without Docker: needs the Redis in REDIS_URL (.env)",
        "",
        "Add a node, run the tests, install the git hooks (inside the activated .venv):",
        f"  python -m {slug} new-node NAME",
        "  pytest",
        "  pre-commit install",
    ]
    return "\n".join(lines)


def main() -> int:
    """Remove strays, make the first commit and print the next steps."""
    answers = json.loads(
        r"""{{ {
            "project_slug": cookiecutter.project_slug,
            "author_name": cookiecutter.author_name,
            "author_email": cookiecutter.author_email,
            "monitoring": cookiecutter.monitoring,
        } | tojson }}"""
    )
    project_dir = Path.cwd()
    for path in remove_strays(project_dir):
        print(f"Removed template left-over {path.relative_to(project_dir)}")
    remove_unselected(project_dir, answers)
    print(make_git_repository(project_dir, answers["author_name"], answers["author_email"]))
    pwd = os.environ.get("PWD")
    print(
        next_steps(
            answers["project_slug"],
            cd_target(project_dir, Path(pwd) if pwd else None),
            has_compose=(project_dir / "docker-compose.yml").is_file(),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
