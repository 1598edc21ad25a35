"""A template update that changes only the library reaches a bake without fighting its owner.

docs/upgrading.md tells owners to follow the template with cruft. This test does what an
owner does, offline and on local paths only (cruft clones a local git repository with git
itself, so no network is needed):

1. the template's tracked files (as they are in this working tree) are committed into a fresh
   git repository, the "published" template;
2. `cruft create` bakes it (`--skip .git`: the post-generation hook makes the bake a git
   repository with a first commit, and a fresh bake's `.git` differs from the last one's, so
   cruft's diff between two bakes would see binary changes there and refuse);
3. the owner edits a node (`<slug>/nodes/hungry.py`) and a text (`<slug>/locales/en/bot.ftl`)
   and commits;
4. the template changes only a file of the vendored library
   (`{{cookiecutter.project_slug}}/botnodes/errors.py`) and commits;
5. `cruft check` reports the bake out of date, `cruft update --skip-apply-ask` applies the
   template's change (a diff between a bake of the old and of the new template commit,
   applied with `git apply -3`), and `cruft check` passes.

The library change must be in the bake, the owner's edits intact, and no `*.rej` left.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .baking import TEMPLATE_DIR, output_tail, run

IDENTITY = ["-c", "user.name=botnodes-test", "-c", "user.email=test@botnodes.invalid"]
LIBRARY_FILE = "botnodes/errors.py"
LIBRARY_CHANGE = (
    "\n\ndef _template_update_marker() -> str:\n"
    '    """Added by a template update that touches only the library."""\n'
    '    return "library-only update"\n'
)
OWNER_LINE = '"""The owner\'s cart node: edited after baking."""'
OWNER_TEXT = "Pardon? (the owner's own words)"


def git(cwd: Path, *args: str) -> str:
    result = run(["git", *IDENTITY, *args], cwd=cwd)
    assert result.returncode == 0, output_tail(result)
    return result.stdout


def cruft(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("cruft") is None:
        pytest.fail("cruft is not installed: pip install -r requirements-dev.txt", pytrace=False)
    return run([sys.executable, "-m", "cruft", *args], cwd=cwd, timeout=300)


def publish_template(destination: Path) -> Path:
    """Commit the template's tracked files, as in this working tree, into a new repository."""
    tracked = run(["git", "ls-files", "-z"], cwd=TEMPLATE_DIR)
    assert tracked.returncode == 0, output_tail(tracked)
    for rel in filter(None, tracked.stdout.split("\0")):
        source = TEMPLATE_DIR / rel
        if source.is_file():  # a tracked file deleted in the working tree is left out
            target = destination / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git(destination, "init", "--quiet", "--initial-branch=main")
    git(destination, "add", "--all")
    git(destination, "commit", "--quiet", "-m", "The template as published")
    return destination


def edit_node(path: Path) -> None:
    """Replace the node module's first line (its docstring's) with the owner's own."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[0].startswith('"""'), lines[0]
    if lines[0].rstrip().endswith('"""') and len(lines[0].strip()) > 3:
        lines[0] = OWNER_LINE + "\n"
    else:  # a docstring that goes on: keep it open
        lines[0] = OWNER_LINE.removesuffix('"""') + "\n"
    path.write_text("".join(lines), encoding="utf-8")


def edit_text(path: Path) -> str:
    """Give the first message of a Fluent file the owner's wording; return its id."""
    text = path.read_text(encoding="utf-8")
    message = re.search(r"^([a-z][\w-]*) = .*$", text, flags=re.MULTILINE)
    assert message is not None, f"no message in {path}"
    path.write_text(
        text[: message.start()] + f"{message.group(1)} = {OWNER_TEXT}" + text[message.end() :],
        encoding="utf-8",
    )
    return message.group(1)


def test_a_library_only_update_applies_cleanly_over_the_owners_edits(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    template = publish_template(tmp_path / "template")
    created = cruft(
        tmp_path,
        *["create", str(template), "--no-input", "--skip", ".git"],
        *["--output-dir", str(tmp_path / "out"), "--config-file", str(cookiecutter_config)],
    )
    assert created.returncode == 0, output_tail(created)
    project = tmp_path / "out" / "food_bot"
    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert state["template"] == str(template)
    assert state["skip"] == [".git"]
    git(project, "add", ".cruft.json")
    git(project, "commit", "--quiet", "-m", "Link the project to its template (cruft)")

    # The owner's work: a node and a text.
    node = project / "food_bot" / "nodes" / "hungry.py"
    texts = project / "food_bot" / "locales" / "en" / "bot.ftl"
    edit_node(node)
    message_id = edit_text(texts)
    owned = {path: path.read_text(encoding="utf-8") for path in (node, texts)}
    git(project, "commit", "--quiet", "--all", "-m", "The owner's node and text")

    # The template's work: the library only.
    library = template / "{{cookiecutter.project_slug}}" / LIBRARY_FILE
    assert library.is_file(), f"the template has no {LIBRARY_FILE}: pick another library file"
    library.write_text(library.read_text(encoding="utf-8") + LIBRARY_CHANGE, encoding="utf-8")
    git(template, "commit", "--quiet", "--all", "-m", "botnodes: a library-only change")
    new_commit = git(template, "rev-parse", "HEAD").strip()

    outdated = cruft(project, "check")
    assert outdated.returncode != 0, output_tail(outdated)

    updated = cruft(project, "update", "--skip-apply-ask")
    assert updated.returncode == 0, output_tail(updated)
    assert "Good work!" in updated.stdout, output_tail(updated)

    assert (project / LIBRARY_FILE).read_text(encoding="utf-8").endswith(LIBRARY_CHANGE)
    assert {path: path.read_text(encoding="utf-8") for path in owned} == owned
    assert node.read_text(encoding="utf-8").startswith(OWNER_LINE.removesuffix('"""'))
    assert f"{message_id} = {OWNER_TEXT}\n" in texts.read_text(encoding="utf-8")
    assert sorted(p.relative_to(project) for p in project.rglob("*.rej")) == []
    changed = git(project, "status", "--porcelain").splitlines()
    assert sorted(line[3:] for line in changed) == [".cruft.json", LIBRARY_FILE]
    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert state["commit"] == new_commit

    current = cruft(project, "check")
    assert current.returncode == 0, output_tail(current)
