"""The bake's fast tier on every Python this machine has of those the bake supports.

The bake's CI runs 3.11 to 3.14 (tests/test_shipping.py checks the matrix); here pyenv has
3.11, 3.12 and 3.13, and each gets a bake (python_version answered to match), a venv made by
`uv sync --locked` with that interpreter, and plain `pytest` (the fast tier, about 15 s).
A version this machine lacks is skipped with its name. Slow: one venv per version, from
uv's cache after the first run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from .baking import BakedProject, output_tail
from .test_shipping import tool

MATRIX = ["3.11", "3.12", "3.13"]


def interpreter(version: str) -> str | None:
    """The newest pyenv build of ``version``, else python<version> on PATH (not a pyenv shim:
    a shim answers only for the versions pyenv has made global)."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    builds = sorted(root.glob(f"{version}.*/bin/python{version}"))
    if builds:
        return str(builds[-1])
    found = shutil.which(f"python{version}")
    return found if found and "/shims/" not in found else None


@pytest.mark.slow
@pytest.mark.parametrize("version", MATRIX)
def test_fast_tier_passes_on_each_python(
    version: str, bake: Callable[..., BakedProject], tmp_path: Path
) -> None:
    python = interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} here (pyenv install {version})")
    project = bake(project_slug="matrix_bot", python_version=version)
    env = {"UV_PROJECT_ENVIRONMENT": str(tmp_path / f"venv-{version}"), "UV_PYTHON": python}
    uv = tool("uv")
    synced = project.run(uv, "sync", "--locked", "--quiet", env=env)
    assert synced.returncode == 0, output_tail(synced)
    checked = project.run(uv, "run", "--locked", "python", "--version", env=env)
    assert checked.stdout.split()[-1].startswith(f"{version}."), output_tail(checked)
    tests = project.run(uv, "run", "--locked", "pytest", "-p", "no:cacheprovider", "-q", env=env)
    assert tests.returncode == 0, output_tail(tests)
    assert " passed" in tests.stdout, output_tail(tests)
