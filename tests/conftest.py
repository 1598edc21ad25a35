"""Fixtures: bake the template with given answers, and install a baked project.

Later tests (Docker, compose, CI, pre-commit, benchmark) reuse ``bake`` for a fresh
per-test bake they may change, ``baked`` for read-only bakes shared by the whole session,
and ``installed_project`` / ``install_project`` for a baked project installed in its own
virtual environment exactly as its README says. The helpers live in tests/baking.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from .baking import BakedProject, InstalledProject, bake_into, install, write_cookiecutter_config


def _key(answers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(answers.items()))


@pytest.fixture(scope="session")
def cookiecutter_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cookiecutter config, so baking never writes to the user's home."""
    return write_cookiecutter_config(tmp_path_factory.mktemp("cookiecutter-home"))


@pytest.fixture
def bake(tmp_path: Path, cookiecutter_config: Path) -> Callable[..., BakedProject]:
    """Return ``bake(**answers)``: a fresh project in this test's tmp dir, for tests that change it.

    Usage: ``project = bake(project_slug="kitbot"); assert project.has_file("kitbot/main.py")``.
    """
    counter = iter(range(1_000_000))

    def _bake(**answers: str) -> BakedProject:
        return bake_into(tmp_path / f"bake{next(counter)}", cookiecutter_config, answers)

    return _bake


@pytest.fixture(scope="session")
def baked(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Callable[..., BakedProject]:
    """Return ``baked(**answers)``: one bake per distinct answer set for the whole session.

    For read-only checks (files, lint, schemas) that would otherwise bake the same project
    many times. Tests must not modify it, and tools must keep their caches out of it.
    """
    cache: dict[tuple[tuple[str, str], ...], BakedProject] = {}

    def _baked(**answers: str) -> BakedProject:
        key = _key(answers)
        if key not in cache:
            cache[key] = bake_into(tmp_path_factory.mktemp("baked"), cookiecutter_config, answers)
        return cache[key]

    return _baked


@pytest.fixture(scope="session")
def install_project(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Callable[..., InstalledProject]:
    """Return ``install_project(**answers)``: bake and install once per answer set a session.

    Each answer set gets its own project and venv: two editable installs of `botnodes` in
    one venv would shadow each other.
    """
    cache: dict[tuple[tuple[str, str], ...], InstalledProject] = {}

    def _install(**answers: str) -> InstalledProject:
        key = _key(answers)
        if key not in cache:
            baked = bake_into(tmp_path_factory.mktemp("installed"), cookiecutter_config, answers)
            cache[key] = install(baked)
        return cache[key]

    return _install


@pytest.fixture(scope="session")
def installed_project(install_project: Callable[..., InstalledProject]) -> InstalledProject:
    """The default bake (`--no-input`), installed in its own venv as its README says."""
    return install_project()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """COMPOSE_TIER=0 leaves the compose tier out (deselected, so it is not reported as skipped)."""
    if os.environ.get("COMPOSE_TIER", "1") != "0":
        return
    deselected = [item for item in items if item.get_closest_marker("compose")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("compose")]
