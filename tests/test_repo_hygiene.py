"""The template repository stays clean: nothing ignored is committed, no Markdown page repeats
a heading.

A file the template's own `.gitignore` ignores (a Redis `dump.rdb`, a `.venv`, a benchmark's
output) is something a test or a tool left behind, not part of the template; once committed,
git keeps tracking it whatever the `.gitignore` says. A heading written twice in one page
gives two identical anchors, so a link to the second one lands on the first.

These checks need git's view of the repository: CI runs from a git clone, so a copy that is
not a git checkout fails here instead of passing silently.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from .baking import TEMPLATE_DIR

PROJECT_DIR = "{{cookiecutter.project_slug}}/"
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")


def git(*args: str) -> str:
    """Run git in the template repository and return its output; fail loudly if it can't."""
    result = subprocess.run(
        ["git", *args], cwd=TEMPLATE_DIR, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"`git {' '.join(args)}` failed in {TEMPLATE_DIR}: these checks need a git checkout"
            f" of the template (CI runs from a git clone).\n{result.stderr.strip()}",
            pytrace=False,
        )
    return result.stdout


@pytest.fixture(scope="module")
def checkout() -> Path:
    """The template's git work tree; fails when the template is not the top of a checkout."""
    top = Path(git("rev-parse", "--show-toplevel").strip()).resolve()
    if top != TEMPLATE_DIR.resolve():
        pytest.fail(
            f"the template ({TEMPLATE_DIR}) is not the top of its git checkout ({top})",
            pytrace=False,
        )
    return top


def test_no_tracked_file_is_ignored(checkout: Path) -> None:
    """`git ls-files -ci --exclude-standard` lists tracked files a .gitignore pattern matches."""
    ignored = git("ls-files", "--cached", "--ignored", "--exclude-standard").splitlines()
    assert ignored == [], (
        "tracked files match the template's .gitignore (left behind by a test or a tool?);"
        f" `git rm --cached` them: {ignored}"
    )


def markdown_pages(checkout: Path) -> list[str]:
    """The template's own Markdown files (tracked, or new and not ignored), not the bake's."""
    files = git("ls-files", "--cached", "--others", "--exclude-standard", "--", "*.md")
    return sorted(
        {
            path
            for path in files.splitlines()
            if not path.startswith(PROJECT_DIR) and (checkout / path).is_file()
        }
    )


def headings(text: str) -> list[str]:
    """The ATX headings' texts of a Markdown page, outside fenced code blocks."""
    found: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        opening = FENCE.match(line)
        if opening:
            if fence is None:
                fence = opening.group(1)
            elif opening.group(1) == fence:
                fence = None
            continue
        match = None if fence else HEADING.match(line)
        if match:
            found.append(match.group(2))
    return found


def test_headings_parse_outside_code_blocks() -> None:
    text = "# Title\n\n```bash\n# a comment\n```\n\n## Part ##\n### Part\n"
    assert headings(text) == ["Title", "Part", "Part"]


def test_the_pages_checked_include_the_readmes(checkout: Path) -> None:
    pages = markdown_pages(checkout)
    assert {"README.md", "bench/README.md"} <= set(pages)


def test_no_markdown_page_repeats_a_heading(checkout: Path) -> None:
    repeated = {}
    for page in markdown_pages(checkout):
        counts = Counter(headings((checkout / page).read_text(encoding="utf-8")))
        twice = sorted(text for text, count in counts.items() if count > 1)
        if twice:
            repeated[page] = twice
    assert repeated == {}, f"headings written more than once in a page: {repeated}"
