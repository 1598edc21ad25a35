"""The translation files and the code agree: same ids, same variables, in every language.

Ids "used in code" are the `Text("id", {...})` calls anywhere in the bot's package (texts.py
builds them all) and in the runtime's texts (botnodes/telegram/texts.py); a message's variables
are the `{ $name }` it refers to, selectors included.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
from fluent.syntax import FluentParser
from fluent.syntax import ast as ftl
from fluent.syntax.visitor import Visitor

from botnodes.telegram import texts as runtime_texts
from botnodes.telegram.cli import check_texts
from botnodes.telegram.i18n import (
    FTL_FILE,
    REFERENCE_LANGUAGE,
    Catalog,
    Text,
    TranslationError,
)
from botnodes.telegram.settings import ConfigError

from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.texts import CATALOG, TEXTS

LOCALES_DIR = CATALOG.directory
PACKAGE_DIR = LOCALES_DIR.parent
#: The runtime's texts are the bot's to translate too.
RUNTIME_TEXTS_FILE = Path(runtime_texts.__file__)


class _Variables(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def visit_VariableReference(self, node: ftl.VariableReference) -> None:
        self.names.add(node.id.name)


def ftl_messages(language: str) -> dict[str, frozenset[str]]:
    """Each message id of a language's file, with the variables it uses."""
    source = (LOCALES_DIR / language / FTL_FILE).read_text(encoding="utf-8")
    found: dict[str, frozenset[str]] = {}
    for entry in FluentParser().parse(source).body:
        assert not isinstance(entry, ftl.Junk), f"{language}/{FTL_FILE}: {entry.content!r}"
        if isinstance(entry, ftl.Message):
            assert entry.id.name not in found, f"{language}: {entry.id.name} is defined twice"
            variables = _Variables()
            variables.visit(entry)
            found[entry.id.name] = frozenset(variables.names)
    return found


def _text_calls(tree: ast.AST) -> Iterator[tuple[str, frozenset[str]]]:
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Text"):
            continue
        first = node.args[0] if node.args else None
        assert isinstance(first, ast.Constant), f"line {node.lineno}: Text() needs a literal id"
        names: frozenset[str] = frozenset()
        if len(node.args) > 1:
            values = node.args[1]
            assert isinstance(values, ast.Dict), f"line {node.lineno}: values as a dict"
            names = frozenset(
                str(key.value) for key in values.keys if isinstance(key, ast.Constant)
            )
        yield str(first.value), names


@functools.cache  # the package's code does not change while the tests run: parse it once
def code_messages() -> dict[str, frozenset[str]]:
    """Each message id the package's code builds, with the variables it passes."""
    found: dict[str, frozenset[str]] = {}
    for path in [*sorted(PACKAGE_DIR.rglob("*.py")), RUNTIME_TEXTS_FILE]:
        for text_id, names in _text_calls(ast.parse(path.read_text(encoding="utf-8"))):
            assert found.get(text_id, names) == names, f"{path.name}: {text_id} varies"
            found[text_id] = names
    return found


def test_the_bot_ships_english_and_russian() -> None:
    assert CATALOG.languages == ("en", "ru")


def test_every_id_used_in_code_is_in_english_with_the_same_variables() -> None:
    english, code = ftl_messages(REFERENCE_LANGUAGE), code_messages()
    assert sorted(code.keys() - english.keys()) == [], "used in code, missing in en"
    assert {key: english[key] for key in code} == code


@pytest.mark.parametrize("language", CATALOG.languages)
def test_every_language_has_the_ids_code_uses_and_no_others(language: str) -> None:
    assert sorted(ftl_messages(language)) == sorted(code_messages())


@pytest.mark.parametrize("language", CATALOG.languages)
def test_every_translation_has_the_variables_of_english(language: str) -> None:
    assert ftl_messages(language) == ftl_messages(REFERENCE_LANGUAGE)


@pytest.mark.parametrize("language", CATALOG.languages)
def test_every_text_renders_with_the_values_code_gives(language: str) -> None:
    for text_id, names in code_messages().items():
        rendered = CATALOG.render(language, Text(text_id, dict.fromkeys(names, 7)))
        assert rendered.strip()
        assert "{" not in rendered, f"{language} {text_id}: {rendered!r}"


def test_russian_plurals_and_numbers_come_from_the_translation() -> None:
    full = [CATALOG.render("ru", TEXTS.hungry_cart_full(limit=n)) for n in (1, 3, 5, 21, 1000)]
    assert [text.split("(")[1].split(")")[0] for text in full] == [
        "1 блюдо",
        "3 блюда",
        "5 блюд",
        "21 блюдо",
        "1000 блюд",
    ]
    # English keeps its words, with numbers as it always wrote them (no "1,000").
    assert CATALOG.render("en", TEXTS.hungry_cart_full(limit=1000)).startswith(
        "Your cart is full (1000 items)."
    )


def test_a_broken_file_or_a_missing_text_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / FTL_FILE).write_text("hello = Hello\nthis is not fluent\n", "utf-8")
    with pytest.raises(TranslationError, match="not a Fluent message: 'this is not fluent'"):
        Catalog(tmp_path)
    (tmp_path / "en" / FTL_FILE).write_text("hello = Hello\n", "utf-8")
    with pytest.raises(TranslationError, match=r"en/bot\.ftl has no message 'bye'"):
        Catalog(tmp_path).render("en", Text("bye"))


def test_a_language_missing_a_text_stops_start_up_naming_it(tmp_path: Path) -> None:
    assert BOT.missing_texts() == []
    for language in CATALOG.languages:
        (tmp_path / language).mkdir()
        source = (LOCALES_DIR / language / FTL_FILE).read_text(encoding="utf-8")
        if language == "ru":  # a translator forgot one
            source = "\n".join(
                line for line in source.splitlines() if not line.startswith("hungry-added =")
            )
        (tmp_path / language / FTL_FILE).write_text(source, encoding="utf-8")
    forgetful = dataclasses.replace(BOT, catalog=Catalog(tmp_path))
    with pytest.raises(ConfigError) as refused:
        check_texts(forgetful)
    assert str(refused.value) == "locales/ru/bot.ftl has no text 'hungry-added'"
