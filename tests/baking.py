"""Helpers to bake the template and install a baked project, shared by the tests and fixtures.

Everything is baked with cookiecutter's own API into directories the caller owns (pytest's
temporary directories) with a private cookiecutter config, so nothing lands in the
repository or in the user's ~/.cookiecutter_replay.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from cookiecutter.main import cookiecutter

TEMPLATE_DIR = Path(__file__).resolve().parents[1]
COOKIECUTTER_JSON: dict[str, object] = json.loads(
    (TEMPLATE_DIR / "cookiecutter.json").read_text(encoding="utf-8")
)

# Variables that would make a child process use this test environment instead of its own,
# and a developer's real bot token, which no baked project under test should ever see.
_LEAKY_ENV = (
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTEST_ADDOPTS",
    "PIP_REQUIRE_VIRTUALENV",
    "BOT_TOKEN",
)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return this process's environment minus what would leak the test venv into a child.

    REDIS_URL and pip's cache settings pass through on purpose.
    """
    env = {key: value for key, value in os.environ.items() if key not in _LEAKY_ENV}
    env.update(extra or {})
    return env


def run(
    args: list[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in ``cwd``, capturing text output; never raises on a non-zero exit.

    Callers assert on ``returncode`` and put :func:`output_tail` in the message, so a
    failure shows what the tool said. Standard input is ``input_text``, or empty.
    """
    return subprocess.run(
        args,
        cwd=cwd,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text if input_text is not None else "",
        check=False,
    )


def output_tail(result: subprocess.CompletedProcess[str], lines: int = 60) -> str:
    """Return the command, its exit code and the end of its output, for assertion messages."""
    text = (result.stdout or "") + (result.stderr or "")
    tail = "\n".join(text.splitlines()[-lines:])
    return f"$ {' '.join(map(str, result.args))}\nexit {result.returncode}\n{tail}"


@dataclass(frozen=True)
class BakedProject:
    """A project generated from the template, with helpers to inspect it and run in it."""

    path: Path
    answers: Mapping[str, str] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """The generated folder's name, which is also the bot's package name."""
        return self.path.name

    def has_file(self, rel_path: str) -> bool:
        return (self.path / rel_path).is_file()

    def has_dir(self, rel_path: str) -> bool:
        return (self.path / rel_path).is_dir()

    def read(self, rel_path: str) -> str:
        return (self.path / rel_path).read_text(encoding="utf-8")

    def files(self) -> list[Path]:
        """Every file in the project, relative to its root, sorted for stable messages.

        The repository the post-generation hook makes (.git) is git's, not the template's.
        """
        return sorted(
            rel
            for rel in (p.relative_to(self.path) for p in self.path.rglob("*") if p.is_file())
            if rel.parts[0] != ".git"
        )

    def run(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run a command with the project root as working directory."""
        return run(list(args), cwd=self.path, env=env, timeout=timeout)


@dataclass(frozen=True)
class InstalledProject:
    """A baked project installed into its own ``.venv`` by pip, from the exported lock.

    ``pip install -r requirements.txt -e .``: the README's route for those without uv.
    """

    baked: BakedProject
    venv: Path

    @property
    def path(self) -> Path:
        return self.baked.path

    @property
    def slug(self) -> str:
        return self.baked.slug

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of an activated venv (`. .venv/bin/activate`), plus ``extra``."""
        env = {
            "VIRTUAL_ENV": str(self.venv),
            "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.update(extra or {})
        return env

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 900,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the project root as if its venv were activated."""
        return run(
            list(args), cwd=self.path, env=self.env(env), timeout=timeout, input_text=input_text
        )


def load_hook(name: str, folder: str = "hooks") -> ModuleType:
    """Import <folder>/<name>.py of the template as a module, by path (hooks/ is no package)."""
    spec = importlib.util.spec_from_file_location(name, TEMPLATE_DIR / folder / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_cookiecutter_config(directory: Path) -> Path:
    """Write a cookiecutter user config that keeps replay files and clones in ``directory``."""
    config = directory / "cookiecutter-config.yaml"
    config.write_text(
        f'cookiecutters_dir: "{directory / "cookiecutters"}"\n'
        f'replay_dir: "{directory / "replay"}"\n',
        encoding="utf-8",
    )
    return config


def bake_into(output_dir: Path, config_file: Path, answers: Mapping[str, str]) -> BakedProject:
    """Generate the template into ``output_dir`` with ``answers``, like `--no-input` would.

    Raises cookiecutter's exception (e.g. FailedHookException) when generation fails, so a
    broken template fails the test that baked it with cookiecutter's own message.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    project = cookiecutter(
        str(TEMPLATE_DIR),
        no_input=True,
        extra_context=dict(answers),
        output_dir=str(output_dir),
        config_file=str(config_file),
    )
    return BakedProject(path=Path(project), answers=dict(answers))


def install(baked: BakedProject) -> InstalledProject:
    """Install ``baked`` the way its README says: a `.venv` in the project, then pip.

    `python -m venv .venv` then `pip install -r requirements.txt -e .` inside it (the lock,
    exported); pip's cache is used, so only the first install on a machine downloads anything.
    """
    venv = baked.path / ".venv"
    created = baked.run(sys.executable, "-m", "venv", str(venv))
    assert created.returncode == 0, output_tail(created)
    installed = InstalledProject(baked=baked, venv=venv)
    pip = installed.run(
        str(installed.python),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--quiet",
        "-r",
        "requirements.txt",
        "-e",
        ".",
    )
    assert pip.returncode == 0, output_tail(pip)
    return installed
