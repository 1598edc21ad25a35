"""Unit tests of the hooks' functions, imported straight from hooks/ without rendering.

The end-to-end behaviour (cookiecutter exits non-zero, prints the line, leaves no folder)
is covered in test_generation.py; here every rule is pinned down cheaply.
"""

from __future__ import annotations

import keyword
import subprocess
import sys
from pathlib import Path

import pytest
from cookiecutter.exceptions import FailedHookException

from .baking import COOKIECUTTER_JSON, load_hook

pre_gen = load_hook("pre_gen_project")
post_gen = load_hook("post_gen_project")
extension = load_hook("local_extensions", folder=".")

RULE = "use lower-case letters, digits and underscores, starting with a letter"

VALID_ANSWERS = {
    "project_name": "Food Bot",
    "project_slug": "food_bot",
    "description": "A Telegram food-ordering bot.",
    "author_name": "Zoë O'Brien",
    "author_email": "zoe@example.com",
    "python_version": "3.12",
}


@pytest.mark.parametrize("slug", ["food_bot", "kitbot", "bot2", "kit_bot_", "a", "food_bot_42"])
def test_good_slugs_pass(slug: str) -> None:
    assert pre_gen.check_project_slug(slug) is None


@pytest.mark.parametrize(
    ("slug", "message"),
    [
        ("", f"project_slug '' is empty: {RULE}; try 'my_bot'"),
        (
            "food-bot",
            f"project_slug 'food-bot' is not a valid Python identifier: {RULE}; try 'food_bot'",
        ),
        (
            "food bot",
            f"project_slug 'food bot' is not a valid Python identifier: {RULE}; try 'food_bot'",
        ),
        (
            "1food",
            f"project_slug '1food' is not a valid Python identifier: {RULE}; try 'my_1food'",
        ),
        (
            "food.bot",
            f"project_slug 'food.bot' is not a valid Python identifier: {RULE}; try 'food_bot'",
        ),
        ("fööd", f"project_slug 'fööd' is not ASCII: {RULE}; try 'food'"),
        ("FoodBot", f"project_slug 'FoodBot' is not lower case: {RULE}; try 'foodbot'"),
        ("food_Bot", f"project_slug 'food_Bot' is not lower case: {RULE}; try 'food_bot'"),
        ("_food", f"project_slug '_food' does not start with a letter: {RULE}; try 'food'"),
        ("class", "project_slug 'class' is a Python keyword: pick another name; try 'class_bot'"),
        ("async", "project_slug 'async' is a Python keyword: pick another name; try 'async_bot'"),
        (
            "match",
            "project_slug 'match' is a Python soft keyword: pick another name; try 'match_bot'",
        ),
        (
            "type",
            "project_slug 'type' is a Python soft keyword: pick another name; try 'type_bot'",
        ),
        (
            "aiogram",
            "project_slug 'aiogram' shadows the module 'aiogram' that the project imports: "
            "pick another name; try 'aiogram_bot'",
        ),
        (
            "json",
            "project_slug 'json' shadows the standard-library module 'json': "
            "pick another name; try 'json_bot'",
        ),
        (
            "a" * 51,
            f"project_slug {'a' * 51!r} is longer than 50 characters: shorten it; try {'a' * 46!r}",
        ),
    ],
)
def test_bad_slug_message_names_value_and_rule_and_suggests_one(slug: str, message: str) -> None:
    assert pre_gen.check_project_slug(slug) == message


@pytest.mark.parametrize(
    "module",
    sorted(
        {"aiogram", "redis", "pydantic", "pydantic_settings", "botnodes", "aiohttp", "tests"}
        | {"test", "pytest", "conftest"}
    ),
)
def test_slug_shadowing_a_project_module_is_refused(module: str) -> None:
    assert pre_gen.check_project_slug(module) == (
        f"project_slug {module!r} shadows the module {module!r} that the project imports: "
        f"pick another name; try '{module}_bot'"
    )


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Food Bot", "food_bot"),
        ("Pizza Café", "pizza_cafe"),
        ("Joe's Pizza!", "joes_pizza"),
        ("Joe\u2019s Pizza", "joes_pizza"),
        ("2 Fast Pizza", "my_2_fast_pizza"),
        ("Food-Bot  Deluxe", "food_bot_deluxe"),
        ("Привет бот", "privet_bot"),
        ("Straße", "strasse"),
        ("🍕 Pizza", "pizza"),
        ("🍕🍕", "my_bot"),
        ("!!!", "my_bot"),
        ("class", "class_bot"),
        ("import", "import_bot"),
        ("Test", "test_bot"),
        ("Redis", "redis_bot"),
        ("email", "email_bot"),
        ("__init__", "init"),
        ("Pizza " * 20, "_".join(["pizza"] * 7)),
    ],
)
def test_suggest_slug_transliterates_and_makes_an_importable_name(name: str, slug: str) -> None:
    assert pre_gen.suggest_slug(name) == slug


HOSTILE_NAMES = [
    *["", " ", "🍕", "💥🔥", "!!!", "-_-", "...", "'", "___", "0", "007", "3.14", "١٢٣"],
    *["class", "import", "None", "match", "_", "test", "tests", "json", "aiogram", "Bot"],
    *["a" * 300, "x " * 200, "9" * 300, "Ωmega ☃ «Café» №1", "山田太郎のピザ", "C++ / C#"],
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_every_suggestion_passes_the_checks(name: str) -> None:
    """Whatever a user types as project_name, the derived default slug bakes."""
    slug = pre_gen.suggest_slug(name)
    assert pre_gen.check_project_slug(slug) is None, slug
    assert len(slug) <= pre_gen.MAX_SLUG_LENGTH


def test_every_stdlib_module_that_looks_like_a_slug_is_refused() -> None:
    candidates = [
        name
        for name in sorted(sys.stdlib_module_names)
        if pre_gen._SLUG_RE.fullmatch(name) and not keyword.iskeyword(name)
    ]
    assert {"asyncio", "json", "logging", "typing", "os", "email"} <= set(candidates)
    accepted = [name for name in candidates if pre_gen.check_project_slug(name) is None]
    assert accepted == []


def test_soft_keywords_cover_the_running_python() -> None:
    """The fixed list must not miss one this Python knows, or results would differ by machine."""
    assert set(keyword.softkwlist) <= pre_gen.SOFT_KEYWORDS


def test_python_versions_match_cookiecutter_json() -> None:
    assert list(pre_gen.SUPPORTED_PYTHON_VERSIONS) == COOKIECUTTER_JSON["python_version"]


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_offered_python_versions_pass(version: str) -> None:
    assert pre_gen.check_python_version(version) is None


@pytest.mark.parametrize("version", ["3.10", "3.14", "3", "", "3.12 ", "python3.12"])
def test_other_python_versions_are_refused(version: str) -> None:
    assert pre_gen.check_python_version(version) == (
        f"python_version {version!r} is not offered: choose one of 3.11, 3.12, 3.13"
    )


@pytest.mark.parametrize(
    "email", ["you@example.com", "a.b+c@mail.example.org", "zoë@exämple.de", "x@y.io"]
)
def test_plausible_emails_pass(email: str) -> None:
    assert pre_gen.check_email(email) is None


@pytest.mark.parametrize(
    "email",
    [
        *["", "you", "you@", "@example.com", "you@example", "a b@example.com", "a@@b.com"],
        *["a@b..com", 'a"b@example.com', "a\\b@example.com"],
    ],
)
def test_implausible_emails_are_refused(email: str) -> None:
    assert pre_gen.check_email(email) == (
        f"author_email {email!r} is not an e-mail address: use the form name@example.com"
    )


@pytest.mark.parametrize("text", ["Food Bot", "Zoë O'Brien", "Kit & Co <bots> 🍕", "山田太郎"])
def test_ordinary_text_passes(text: str) -> None:
    assert pre_gen.check_text("author_name", text) is None


@pytest.mark.parametrize(
    ("text", "bad"),
    [('A "great" bot', '"'), ("back\\slash", "\\"), ("two\nlines", "\n"), ("tab\there", "\t")],
)
def test_text_that_would_break_toml_is_refused(text: str, bad: str) -> None:
    message = pre_gen.check_text("description", text)
    assert message == (
        f"description {text!r} contains {bad!r}: leave out double quotes, "
        "backslashes and line breaks, they would break pyproject.toml"
    )
    assert "\n" not in message


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text_is_refused(text: str) -> None:
    assert pre_gen.check_text("project_name", text) == (
        f"project_name {text!r} is empty: give a short text"
    )


def test_find_error_accepts_good_answers() -> None:
    assert pre_gen.find_error(VALID_ANSWERS) is None


def test_find_error_reports_only_the_first_problem() -> None:
    answers = {**VALID_ANSWERS, "project_slug": "food-bot", "author_email": "nope"}
    assert pre_gen.find_error(answers) == (
        f"project_slug 'food-bot' is not a valid Python identifier: {RULE}; try 'food_bot'"
    )
    assert pre_gen.find_error({**VALID_ANSWERS, "author_email": "nope"}) == (
        "author_email 'nope' is not an e-mail address: use the form name@example.com"
    )


def test_remove_strays_deletes_leftovers_and_keeps_the_project(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BOT_TOKEN=123:secret\n")
    (tmp_path / ".env.example").write_text("BOT_TOKEN=\n")
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "pkg" / "mod.py").write_text("")
    (tmp_path / ".venv" / "lib" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg.egg-info").mkdir()
    (tmp_path / ".mypy_cache").mkdir()

    removed = post_gen.remove_strays(tmp_path)

    assert removed == sorted(
        tmp_path / name
        for name in [".env", "pkg/__pycache__", ".venv", "pkg.egg-info", ".mypy_cache"]
    )
    remaining = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert remaining == [".env.example", "pkg", "pkg/mod.py"]


def test_remove_strays_on_a_clean_project_removes_nothing(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# bot\n")
    assert post_gen.remove_strays(tmp_path) == []
    assert (tmp_path / "README.md").is_file()


def test_cd_target_is_relative_below_the_users_directory(tmp_path: Path) -> None:
    assert post_gen.cd_target(tmp_path / "out" / "food_bot", tmp_path) == "out/food_bot"


@pytest.mark.parametrize("user_cwd", [None, Path("/somewhere/else")])
def test_cd_target_is_absolute_otherwise(tmp_path: Path, user_cwd: Path | None) -> None:
    assert post_gen.cd_target(tmp_path / "food_bot", user_cwd) == str(tmp_path / "food_bot")


@pytest.mark.parametrize("has_compose", [True, False])
def test_next_steps_start_with_the_chat_then_run_then_test(has_compose: bool) -> None:
    text = post_gen.next_steps("kitbot", "out/kitbot", has_compose=has_compose)
    commands = [line.split("#")[0].strip() for line in text.splitlines() if line.startswith("  ")]
    assert commands[:3] == [
        "cd out/kitbot",
        "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt -e .",
        "python -m kitbot chat",
    ]
    expected_rest = [
        "cp .env.example .env",
        *(["docker compose up"] if has_compose else []),
        "python -m kitbot",
        "python -m kitbot new-node NAME",
        "pytest",
        "pre-commit install",
    ]
    assert commands[3:] == expected_rest
    assert any("BOT_TOKEN" in line for line in text.splitlines() if "cp .env.example" in line)


def git(project: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=project, capture_output=True, text=True, check=True)
    return result.stdout


def test_git_repository_gets_a_first_commit_by_the_author(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No git identity on the machine (an empty HOME): the answers are the committer."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    project = tmp_path / "kitbot"
    (project / "kitbot" / "__pycache__").mkdir(parents=True)
    (project / "kitbot" / "__init__.py").write_text("")
    (project / "kitbot" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (project / ".gitignore").write_text("__pycache__/\n.env\n")
    (project / ".env").write_text("BOT_TOKEN=123:secret\n")

    line = post_gen.make_git_repository(project, "Zoë O'Brien", "zoe@example.com")

    assert line == (
        "Made it a git repository with a first commit ('Initial commit from botnodes-template')"
    )
    assert git(project, "log", "--format=%an|%ae|%cn|%ce|%s").splitlines() == [
        "Zoë O'Brien|zoe@example.com|Zoë O'Brien|zoe@example.com|"
        "Initial commit from botnodes-template"
    ]
    assert git(project, "ls-files").split() == [".gitignore", "kitbot/__init__.py"]
    assert git(project, "status", "--porcelain") == ""
    assert git(project, "branch", "--show-current").strip() == "main"


def test_no_git_means_one_line_and_no_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert post_gen.make_git_repository(tmp_path, "A", "a@example.com") == (
        "git is not installed: install it, then `git init` here before `pre-commit install`"
    )
    assert not (tmp_path / ".git").exists()


def test_a_bake_inside_a_repository_makes_no_nested_one(tmp_path: Path) -> None:
    git(tmp_path, "init", "--quiet")
    project = tmp_path / "kitbot"
    project.mkdir()
    (project / "README.md").write_text("# kitbot\n")
    line = post_gen.make_git_repository(project, "A", "a@example.com")
    assert line == f"Not made a git repository: it is inside the repository {tmp_path}"
    assert not (project / ".git").exists()


def test_a_failing_git_step_is_one_line_and_no_exception(tmp_path: Path) -> None:
    """A name git refuses as an identity stops at the commit, with what to do instead."""
    (tmp_path / "README.md").write_text("# kitbot\n")
    line = post_gen.make_git_repository(tmp_path, "", "a@example.com")
    assert line.startswith("git commit failed (")
    assert line.endswith("make the first commit yourself (git init, git add --all, git commit)")
    assert "\n" not in line


def test_extension_filters_are_the_hooks_rules() -> None:
    assert extension.package_name("Pizza Café") == "pizza_cafe"
    assert extension.check_answers(VALID_ANSWERS) == "yes"
    with pytest.raises(extension.RefusedAnswer) as refused:
        extension.check_answers({**VALID_ANSWERS, "project_slug": "Bad-Slug"})
    assert str(refused.value) == (
        f"ERROR: project_slug 'Bad-Slug' is not a valid Python identifier: {RULE}; try 'bad_slug'"
    )
    assert isinstance(refused.value, FailedHookException)
