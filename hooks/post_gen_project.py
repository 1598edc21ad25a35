"""Tidy the freshly generated project and tell the user what to do next.

Cookiecutter renders this file with Jinja and runs it with the new project folder as the
working directory. The rendered slug reaches the code only inside ``main()``, so the module
imports cleanly in the template's unit tests. Nothing here reads, creates or prints
secrets: the user writes BOT_TOKEN into their own ``.env``.
"""

from __future__ import annotations

import os
import shutil
import sys
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


def next_steps(slug: str, cd_path: str, has_compose: bool) -> str:
    """Return the next-steps text printed after generation.

    The commands are the ones the generated README gives, so a user can copy them in order.
    The Docker route is only offered when the project has a compose file.
    """
    lines = [
        f"Created the bot project {slug!r}. Next steps:",
        "",
        f"  cd {cd_path}",
        "  cp .env.example .env    # then set BOT_TOKEN in .env (the token from @BotFather)",
    ]
    if has_compose:
        lines += [
            "",
            "Run with Docker (the bot and its Redis):",
            "  docker compose up",
        ]
    lines += [
        "",
        "Run without Docker (needs a Redis server; set REDIS_URL in .env):",
        "  python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]'",
        f"  python -m {slug}",
        "",
        "Run the tests (inside the activated .venv):",
        "  pytest",
    ]
    return "\n".join(lines)


def main() -> int:
    """Remove strays from the new project and print the next steps."""
    # Safe as a plain literal: pre_gen_project.py only lets [a-z][a-z0-9_]* through.
    slug = "{{ cookiecutter.project_slug }}"
    project_dir = Path.cwd()
    for path in remove_strays(project_dir):
        print(f"Removed template left-over {path.relative_to(project_dir)}")
    pwd = os.environ.get("PWD")
    print(
        next_steps(
            slug,
            cd_target(project_dir, Path(pwd) if pwd else None),
            has_compose=(project_dir / "docker-compose.yml").is_file(),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
