"""Bake the template with several answer sets and check every bake the same way.

Modelled on cookiecutter-django's generation tests: a data list of answer combinations
with readable ids; each bake is checked for its files, for Jinja left in any file or path,
and with the generated project's own linters (ruff, mypy) run from this environment.
Bakes are shared per answer set for the session (``baked``), so the tools' caches are
kept out of the baked folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from .baking import TEMPLATE_DIR, BakedProject, child_env, output_tail, write_cookiecutter_config

# (answers, expected slug). Ids read as what the combination tests.
ANSWER_SETS = [
    pytest.param({}, "food_bot", id="defaults"),
    pytest.param({"project_name": "Kit Bot"}, "kit_bot", id="name-derives-slug"),
    pytest.param({"project_name": "Food-Bot Deluxe"}, "food_bot_deluxe", id="dashes-in-name"),
    pytest.param({"project_name": "Pizza Café"}, "pizza_cafe", id="accent-transliterated"),
    pytest.param({"project_name": "Joe's Pizza!"}, "joes_pizza", id="apostrophe-and-bang"),
    pytest.param({"project_name": "2 Fast Pizza"}, "my_2_fast_pizza", id="leading-digit"),
    pytest.param({"project_slug": "kitbot"}, "kitbot", id="slug-alone"),
    pytest.param({"python_version": "3.11"}, "food_bot", id="python-3.11"),
    pytest.param({"python_version": "3.13"}, "food_bot", id="python-3.13"),
    pytest.param(
        {
            "project_name": "Pizza Çafé",
            "project_slug": "pizza_cafe",
            "author_name": "Zoë O'Brien-Łukasiewicz 山田",
            "author_email": "zoe@example.org",
            "description": "Orders pizza — fast & «friendly» <b>too</b>, isn't it?",
        },
        "pizza_cafe",
        id="unicode-answers",
    ),
]

# The generated project's files that every answer set must produce.
EXPECTED_FILES = [
    "README.md",
    "pyproject.toml",
    ".env.example",
    ".gitignore",
    "botnodes/__init__.py",
    "botnodes/py.typed",
    "tests/conftest.py",
]
EXPECTED_PACKAGE_FILES = [
    "__init__.py",
    "__main__.py",
    "settings.py",
    "nodes_types.py",
    "texts.py",
    "food_api.py",
    "main.py",
    "nodes/__init__.py",
    "nodes/start.py",
    "nodes/hungry.py",
    "nodes/hold.py",
]

# Jinja that cookiecutter should have rendered. Rendering consumes every unescaped "{{",
# so what survives is a copied-verbatim file that needed rendering, or a slip with
# {% raw %}. The generated code legitimately has "{{" elsewhere: Python f-strings escaping
# Redis hash tags (f"{key}:{{{user_id}}}", f"{key}:{{1}}"), GitHub Actions' "${{ ... }}" and
# Go templates ("{{.State}}"), so a bare "{{" or "}}" cannot be the test. Flagged are: a
# cookiecutter variable however spaced; any other Jinja-style "{{ name" (a space after the
# braces, which f-string escapes and Go templates do not have); a Jinja statement tag; a
# Jinja comment.
_JINJA_TAGS = (
    "if|elif|else|endif|for|endfor|raw|endraw|set|endset|macro|endmacro|include|import|from"
    "|block|endblock|extends|filter|endfilter|with|endwith|call|endcall"
)
JINJA_LEFTOVER = re.compile(
    r"\{\{-?\s*cookiecutter\b"
    r"|(?<![{$])\{\{-?\s+[A-Za-z_]"
    rf"|\{{%-?\s*(?:{_JINJA_TAGS})\b"
    r"|\{#.*?#\}"
)


def jinja_leftovers(project: BakedProject) -> list[str]:
    """Return "path:line: text" for every path or line that still holds Jinja syntax."""
    found = []
    for rel in project.files():
        if JINJA_LEFTOVER.search(str(rel)):
            found.append(f"{rel}: Jinja in the path")
        data = (project.path / rel).read_bytes()
        if b"\0" in data:
            continue  # binary
        for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
            if JINJA_LEFTOVER.search(line):
                found.append(f"{rel}:{number}: {line.strip()}")
    return found


@pytest.mark.parametrize(
    "line",
    [
        'name = "{{ cookiecutter.project_slug }}"',
        'name = "{{cookiecutter.project_slug}}"',
        "version: {{ python_version }}",
        "{%- if cookiecutter.docker %}",
        "{% endraw %}",
        "{# a Jinja comment #}",
    ],
)
def test_jinja_scan_flags_leftovers(line: str) -> None:
    assert JINJA_LEFTOVER.search(line)


@pytest.mark.parametrize(
    "line",
    [
        'return f"{self._prefix}:{{{user_id}}}:lock"',
        'await redis.get(f"{state_key}:{{1}}")',
        "python-version: ${{ matrix.python-version }}",
        'test: ["CMD", "docker", "inspect", "--format", "{{.State.Health}}"]',
        'config = {"a": {"b": 1}}',
        'text = "%s{%s}" % (a, b)',
    ],
)
def test_jinja_scan_allows_legitimate_braces(line: str) -> None:
    assert not JINJA_LEFTOVER.search(line)


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Return ``mypy_cache(slug)``: one mypy cache per slug, shared by that slug's bakes.

    Shared so the third-party stubs (aiogram) are analysed once per slug, not per bake; not
    shared across slugs, because mypy trusts a cached module whose file has the same size
    and the same whole-second mtime, and two bakes made in the same second with slugs of
    the same length (pizza_cafe, joes_pizza) have such files with different imports.
    """
    root = tmp_path_factory.mktemp("mypy-cache")
    return lambda slug: root / slug


def run_tool(project: BakedProject, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a tool of this environment (ruff, mypy) as a module, in the baked project."""
    return project.run(sys.executable, "-m", *args)


@pytest.mark.parametrize(("answers", "slug"), ANSWER_SETS)
def test_bake_has_the_project_files(
    baked: Callable[..., BakedProject], answers: dict[str, str], slug: str
) -> None:
    project = baked(**answers)
    assert project.slug == slug
    missing = [rel for rel in EXPECTED_FILES if not project.has_file(rel)]
    missing += [
        f"{slug}/{rel}" for rel in EXPECTED_PACKAGE_FILES if not project.has_file(f"{slug}/{rel}")
    ]
    assert missing == []
    assert not project.has_file(".env"), "a .env must never be generated: it holds the token"


@pytest.mark.parametrize(("answers", "slug"), ANSWER_SETS)
def test_bake_readme_shows_the_flow_its_code_declares(
    baked: Callable[..., BakedProject], answers: dict[str, str], slug: str
) -> None:
    """`python -m <slug> diagram` (read from the nodes' annotations) is what the README embeds."""
    project = baked(**answers)
    env = {**os.environ, "PYTHONPATH": str(project.path), "PYTHONDONTWRITEBYTECODE": "1"}
    result = project.run(sys.executable, "-m", slug, "diagram", env=env)
    assert result.returncode == 0, output_tail(result)
    readme = project.read("README.md")
    assert "```mermaid\n" + result.stdout.rstrip("\n") + "\n```" in readme


def test_bake_architecture_page_names_every_module(baked: Callable[..., BakedProject]) -> None:
    """docs/architecture.md is the map of the tree: a module added without a line there fails."""
    project = baked()
    layout = project.read("docs/architecture.md")
    modules = [
        rel
        for rel in project.files()
        if rel.suffix == ".py"
        and rel.parts[0] in {project.slug, "botnodes"}
        and rel.name != "__init__.py"
    ]
    assert len(modules) > 20
    named = set(re.findall(r"(?<![\w/.])(\w+\.py)\b", layout))
    assert [str(rel) for rel in modules if rel.name not in named] == []


def test_bake_owner_package_is_a_small_room(baked: Callable[..., BakedProject]) -> None:
    """What a bot owner writes stays readable in one sitting; the runtime is the library's."""
    project = baked()
    owned = [rel for rel in project.files() if rel.parts[0] == project.slug]
    code = [rel for rel in owned if rel.suffix in {".py", ".ftl"}]
    lines = sum(len(project.read(str(rel)).splitlines()) for rel in code)
    assert len(owned) <= 16, sorted(map(str, owned))
    assert lines < 1200, lines


def test_bake_docs_say_each_heading_once(baked: Callable[..., BakedProject]) -> None:
    """One topic a page: a heading twice (in a page or across README and docs/) fails."""
    project = baked()
    pages = [Path("README.md"), *sorted(rel for rel in project.files() if rel.parts[0] == "docs")]
    seen: dict[str, str] = {}
    repeated = []
    for page in pages:
        fenced = False
        for line in project.read(str(page)).splitlines():
            fenced ^= line.startswith("```")
            if fenced or not re.match(r"#{1,6} ", line):
                continue
            heading = line.lstrip("#").strip().lower()
            if heading in seen:
                repeated.append(f"{page}: {line!r} (also in {seen[heading]})")
            seen.setdefault(heading, str(page))
    assert repeated == []
    assert len(project.read("README.md").splitlines()) < 100


@pytest.mark.parametrize(("answers", "slug"), ANSWER_SETS)
def test_bake_leaves_no_jinja(
    baked: Callable[..., BakedProject], answers: dict[str, str], slug: str
) -> None:
    assert jinja_leftovers(baked(**answers)) == []


@pytest.mark.parametrize(("answers", "slug"), ANSWER_SETS)
def test_bake_has_no_template_leftovers(
    baked: Callable[..., BakedProject], answers: dict[str, str], slug: str
) -> None:
    project = baked(**answers)
    stray = [
        str(rel)
        for rel in project.files()
        if {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv"} & set(rel.parts)
    ]
    assert stray == []


@pytest.mark.parametrize(("answers", "slug"), ANSWER_SETS)
def test_bake_pyproject_carries_the_answers(
    baked: Callable[..., BakedProject], answers: dict[str, str], slug: str
) -> None:
    """The answers reach pyproject.toml intact: quotes and non-ASCII must not break TOML."""
    project = baked(**answers)
    meta = tomllib.loads(project.read("pyproject.toml"))["project"]
    author = meta["authors"][0]
    assert author["name"] == answers.get("author_name", "Your Name")
    assert author["email"] == answers.get("author_email", "you@example.com")
    assert meta["description"] == answers.get(
        "description", "A Telegram food-ordering bot on aiogram 3, botnodes and Redis."
    )
    # Whatever the Docker/CI Python, the project itself installs on every offered version.
    assert meta["requires-python"] == ">=3.11"


@pytest.mark.parametrize(("answers", "slug"), ANSWER_SETS)
def test_bake_passes_ruff_check(
    baked: Callable[..., BakedProject], answers: dict[str, str], slug: str
) -> None:
    result = run_tool(baked(**answers), "ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, output_tail(result)


@pytest.mark.parametrize(("answers", "slug"), ANSWER_SETS)
def test_bake_passes_ruff_format_check(
    baked: Callable[..., BakedProject], answers: dict[str, str], slug: str
) -> None:
    result = run_tool(baked(**answers), "ruff", "format", "--check", "--no-cache", ".")
    assert result.returncode == 0, output_tail(result)


@pytest.mark.parametrize(("answers", "slug"), ANSWER_SETS)
def test_bake_passes_mypy(
    baked: Callable[..., BakedProject],
    answers: dict[str, str],
    slug: str,
    mypy_cache: Callable[[str], Path],
) -> None:
    """Plain `mypy` as the project's CI runs it: the files and strictness come from pyproject."""
    result = run_tool(baked(**answers), "mypy", "--cache-dir", str(mypy_cache(slug)))
    assert result.returncode == 0, output_tail(result)


def test_botnodes_is_mypy_strict(
    baked: Callable[..., BakedProject], mypy_cache: Callable[[str], Path]
) -> None:
    """The vendored library is strict whatever the project's config says about the rest."""
    result = run_tool(
        baked(), "mypy", "--strict", "--cache-dir", str(mypy_cache("botnodes")), "botnodes"
    )
    assert result.returncode == 0, output_tail(result)


# ---- refused answers: the CLI a user runs, its one-line message, and nothing left behind.

BAD_SLUGS = [
    ("Bad-Slug", "is not a valid Python identifier: use lower-case letters", "bad_slug"),
    ("food bot", "is not a valid Python identifier: use lower-case letters", "food_bot"),
    ("2food", "is not a valid Python identifier: use lower-case letters", "my_2food"),
    ("FoodBot", "is not lower case: use lower-case letters", "foodbot"),
    ("fööd", "is not ASCII: use lower-case letters", "food"),
    ("class", "is a Python keyword: pick another name", "class_bot"),
    ("match", "is a Python soft keyword: pick another name", "match_bot"),
    ("aiogram", "shadows the module 'aiogram' that the project imports", "aiogram_bot"),
    ("redis", "shadows the module 'redis' that the project imports", "redis_bot"),
    ("botnodes", "shadows the module 'botnodes' that the project imports", "botnodes_bot"),
    ("tests", "shadows the module 'tests' that the project imports", "tests_bot"),
    ("json", "shadows the standard-library module 'json'", "json_bot"),
    ("asyncio", "shadows the standard-library module 'asyncio'", "asyncio_bot"),
    ("a" * 60, "is longer than 50 characters: shorten it", "a" * 46),
]


def run_cookiecutter_cli(
    tmp_path: Path, *answers: str, template: Path = TEMPLATE_DIR
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run `cookiecutter --no-input <template> key=value...` into an empty output folder."""
    out = tmp_path / "out"
    out.mkdir()
    config = write_cookiecutter_config(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "-o",
            str(out),
            str(template),
            *answers,
        ],
        env=child_env({"COOKIECUTTER_CONFIG": str(config)}),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    return result, out


def output_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Every non-blank line the user sees, stdout and stderr together."""
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("slug", "rule", "suggestion"), BAD_SLUGS, ids=[slug[:20] for slug, _, _ in BAD_SLUGS]
)
def test_bad_slug_is_one_line_suggesting_a_slug_and_leaves_nothing(
    tmp_path: Path, slug: str, rule: str, suggestion: str
) -> None:
    """The user sees exactly one line, no traceback, exit status 1, and no folder."""
    result, out = run_cookiecutter_cli(tmp_path, f"project_slug={slug}")
    assert result.returncode == 1
    (line,) = output_lines(result)
    assert line.startswith(f"ERROR: project_slug {slug!r} {rule}")
    assert line.endswith(f"; try {suggestion!r}")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            "author_email=not-an-address",
            "ERROR: author_email 'not-an-address' is not an e-mail address: "
            "use the form name@example.com",
        ),
        (
            'description=A "quoted" bot',
            "ERROR: description 'A \"quoted\" bot' contains '\"': leave out double quotes, "
            "backslashes and line breaks, they would break pyproject.toml",
        ),
        (
            "project_name=   ",
            "ERROR: project_name '   ' is empty: give a short text",
        ),
    ],
    ids=["bad-email", "quote-in-description", "blank-name"],
)
def test_bad_free_text_fails_with_one_line(tmp_path: Path, answer: str, message: str) -> None:
    """A quote in an answer reaches the checks intact (no SyntaxError) and is refused cleanly."""
    result, out = run_cookiecutter_cli(tmp_path, answer)
    assert result.returncode == 1
    assert output_lines(result) == [message]
    assert list(out.iterdir()) == []


# Names a user could type: each bakes with a valid slug (the checks' own rule decides).
HOSTILE_NAMES = [
    pytest.param("🍕🍕🍕", "my_bot", id="emoji-only"),
    pytest.param("?!...", "my_bot", id="punctuation-only"),
    pytest.param("class", "class_bot", id="keyword"),
    pytest.param("import", "import_bot", id="import"),
    pytest.param("test", "test_bot", id="stdlib-test"),
    pytest.param("007", "my_007", id="digits-only"),
    pytest.param("Pizza " * 60, "_".join(["pizza"] * 7), id="very-long"),
    pytest.param("山田太郎のピザ", "shan_tian_tai_lang_nohisa", id="japanese"),
]


@pytest.mark.parametrize(("name", "slug"), HOSTILE_NAMES)
def test_any_project_name_bakes_with_a_valid_slug(tmp_path: Path, name: str, slug: str) -> None:
    result, out = run_cookiecutter_cli(tmp_path, f"project_name={name.strip()}")
    assert result.returncode == 0, output_tail(result)
    assert [p.name for p in out.iterdir()] == [slug]
    assert (out / slug / slug / "__main__.py").is_file()
    assert f"  python -m {slug} chat" in result.stdout


def test_cli_bake_is_a_git_repository_and_prints_next_steps(tmp_path: Path) -> None:
    """The bake starts committed, so `pre-commit install` works; the steps start with chat."""
    result, out = run_cookiecutter_cli(tmp_path, "project_slug=kitbot", "author_name=Zoë")
    assert result.returncode == 0, output_tail(result)
    project = out / "kitbot"
    assert (project / "kitbot" / "__main__.py").is_file()
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "Made it a git repository with a first commit" in result.stdout
    install = (
        "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt -e ."
    )
    first = lines.index(install)
    assert lines[first - 1].startswith("cd ")
    assert lines[first - 1].endswith("kitbot")
    assert lines[first + 1].startswith("python -m kitbot chat ")

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=project, capture_output=True, text=True, check=True
        )
        return done.stdout

    assert git("log", "--format=%an <%ae>").splitlines() == ["Zoë <you@example.com>"]
    assert git("status", "--porcelain", "--ignored") == ""
    tracked = set(git("ls-files").splitlines())
    on_disk = {str(rel) for rel in BakedProject(path=project).files() if ".git" not in rel.parts}
    assert tracked == on_disk
    assert {".gitignore", ".pre-commit-config.yaml", "kitbot/__main__.py"} <= tracked


def test_template_leftovers_and_secrets_stay_behind(tmp_path: Path) -> None:
    """A developer's .env and caches inside the template folder must not reach a new project.

    Cookiecutter copies whatever is in the template folder, so this bakes a copy of the
    template with such left-overs planted, the way a developer's checkout can look.
    """
    template = tmp_path / "template"
    shutil.copytree(
        TEMPLATE_DIR,
        template,
        ignore=shutil.ignore_patterns(".git", ".venv", ".notes", "*_cache", "__pycache__"),
    )
    inner = template / "{{cookiecutter.project_slug}}"
    secret = "123456:planted-secret-token"
    (inner / ".env").write_text(f"BOT_TOKEN={secret}\n", encoding="utf-8")
    (inner / "botnodes" / "__pycache__").mkdir()
    (inner / "botnodes" / "__pycache__" / "node.cpython-311.pyc").write_bytes(b"\0stale")

    result, out = run_cookiecutter_cli(tmp_path, template=template)

    assert result.returncode == 0, output_tail(result)
    assert not (out / "food_bot" / ".env").exists()
    assert not (out / "food_bot" / "botnodes" / "__pycache__").exists()
    assert (out / "food_bot" / "pyproject.toml").is_file()
    assert secret not in result.stdout + result.stderr
