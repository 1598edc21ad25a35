"""Locked, declared, minimal: the bake's uv.lock and the template's own, and what they pin.

- The bake's uv.lock matches its pyproject.toml (`uv lock --check`, as its CI runs it), for
  every project name: the lock's project entry is templated. requirements.txt (the pip route)
  is exactly the lock exported.
- The template's own tools are locked the same way: uv.lock at the root, requirements-dev.txt
  its export (what scripts/test.sh installs with pip).
- deptry finds nothing: every import declared, nothing declared unused; each runtime
  dependency is bounded below its next major version.
- Every tool is one version everywhere: ruff in the dev group, the lock and pre-commit.

`uv lock --check` reads PyPI's index, or uv's cache when it has seen these versions.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from .baking import TEMPLATE_DIR, BakedProject, output_tail, run
from .test_shipping import load_yaml, tool

EXPORT = ["export", "--frozen", "--no-emit-project", "--no-hashes", "--no-annotate"]


def locked_version(lock_text: str, name: str) -> str:
    """The version uv.lock pins for the package ``name``."""
    lock = tomllib.loads(lock_text)
    (version,) = [p["version"] for p in lock["package"] if p["name"] == name]
    return str(version)


@pytest.mark.parametrize("slug", ["food_bot", "zz_top_bot", "aaa_bot"])
def test_bake_lock_matches_its_pyproject_whatever_the_name(
    baked: Callable[..., BakedProject], slug: str
) -> None:
    """The project's entry sorts anywhere in the lock; uv compares content, not order."""
    project = baked(project_slug=slug)
    lock = tomllib.loads(project.read("uv.lock"))
    names = {package["name"] for package in lock["package"]}
    assert slug.replace("_", "-") in names
    result = project.run(tool("uv"), "lock", "--check")
    assert result.returncode == 0, output_tail(result)


def test_bake_requirements_txt_is_the_lock_exported(
    baked: Callable[..., BakedProject], tmp_path: Path
) -> None:
    project = baked(project_slug="kitbot")
    out = tmp_path / "requirements.txt"
    result = project.run(tool("uv"), *EXPORT, "--quiet", "-o", str(out))
    assert result.returncode == 0, output_tail(result)
    # The header names the output file as given; the rest must match line for line.
    expected = out.read_text(encoding="utf-8").replace(str(out), "requirements.txt")
    assert project.read("requirements.txt") == expected


def test_template_tools_are_locked_and_exported_for_pip() -> None:
    uv = tool("uv")
    checked = run([uv, "lock", "--check"], cwd=TEMPLATE_DIR)
    assert checked.returncode == 0, output_tail(checked)
    exported = run([uv, "export", "--frozen", "--no-hashes"], cwd=TEMPLATE_DIR)
    assert exported.returncode == 0, output_tail(exported)
    body = [line for line in exported.stdout.splitlines() if not line.startswith("#")]
    committed = (TEMPLATE_DIR / "requirements-dev.txt").read_text(encoding="utf-8").splitlines()
    assert body == [line for line in committed if not line.startswith("#")], (
        "requirements-dev.txt is stale: uv export --frozen --no-hashes -o requirements-dev.txt"
    )


def test_bake_has_no_undeclared_or_unused_dependency(
    baked: Callable[..., BakedProject],
) -> None:
    """deptry, run from this environment (which has the bake's dependencies installed)."""
    project = baked()
    result = project.run(tool("deptry"), ".", "--no-ansi")
    assert result.returncode == 0, output_tail(result)


def test_runtime_dependencies_stop_below_their_next_major(
    baked: Callable[..., BakedProject],
) -> None:
    """Each runtime dependency allows the locked version's major and stops below the next."""
    project = baked()
    pyproject = tomllib.loads(project.read("pyproject.toml"))
    names = set()
    for text in pyproject["project"]["dependencies"]:
        requirement = Requirement(text)
        names.add(requirement.name)
        assert [s for s in requirement.specifier if s.operator == ">="], f"{text}: lower bound?"
        uppers = [s for s in requirement.specifier if s.operator == "<"]
        assert len(uppers) == 1, f"{text}: give an upper bound, <next major"
        locked = locked_version(project.read("uv.lock"), canonical(requirement.name))
        next_major = int(locked.split(".")[0]) + 1
        assert uppers[0].version == str(next_major), f"{text}: locked {locked}, <{next_major}"
    assert "aiohttp" in names, "the runtime imports aiohttp directly: declare it"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_tools_are_pinned_to_one_version_everywhere(baked: Callable[..., BakedProject]) -> None:
    project = baked()
    pyproject = tomllib.loads(project.read("pyproject.toml"))
    dev = [Requirement(text) for text in pyproject["dependency-groups"]["dev"]]
    for requirement in dev:
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{requirement}: pin the tool exactly"
        assert locked_version(project.read("uv.lock"), canonical(requirement.name)) == spec.version
    pins = {r.name: next(iter(r.specifier)).version for r in dev}
    config = load_yaml(project.read(".pre-commit-config.yaml"))
    (ruff_repo,) = [r for r in config["repos"] if r["repo"].endswith("/ruff-pre-commit")]
    assert ruff_repo["rev"] == f"v{pins['ruff']}"
    # The template's own environment runs the same tools as the bake.
    template = tomllib.loads((TEMPLATE_DIR / "pyproject.toml").read_text(encoding="utf-8"))
    template_pins = {
        r.name: next(iter(r.specifier)).version
        for r in map(Requirement, template["dependency-groups"]["dev"])
    }
    for name in ("ruff", "mypy", "pytest", "pytest-asyncio", "deptry"):
        assert template_pins[name] == pins[name], name
    required = re.search(r'required-version = "==([\d.]+)"', project.read("pyproject.toml"))
    assert required is not None
    assert template_pins["uv"] == required.group(1)


def test_a_stale_lock_fails_the_check_ci_runs(bake: Callable[..., BakedProject]) -> None:
    """A dependency added to pyproject.toml without `uv lock` fails `uv lock --check`."""
    project = bake()
    pyproject = project.path / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(
        text.replace('    "aiohttp>=3.9,<4",\n', '    "aiohttp>=3.9,<4",\n    "attrs>=23,<27",\n'),
        encoding="utf-8",
    )
    assert pyproject.read_text(encoding="utf-8") != text
    result = project.run(tool("uv"), "lock", "--check")
    assert result.returncode != 0, output_tail(result)
    assert "uv.lock" in result.stderr, output_tail(result)
