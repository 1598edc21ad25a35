"""A bot's languages: Fluent files per language, loaded once, and a `Text` to render in one.

Texts live in the bot's `locales/<language>/bot.ftl` (Fluent: named ids, explicit variables, plural
selectors that each language writes its own way). Code never holds the words: it builds a
`Text` (an id and its values, see texts.py) and the text is rendered in the user's language
only when it is sent, so a node never has to know who it talks to.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from fluent.runtime import FluentBundle, FluentResource
from fluent.runtime.types import fluent_number
from fluent.syntax.ast import Junk, Message

logger = logging.getLogger(__name__)

#: Each language of a bot is a folder named by its code holding this file.
FTL_FILE = "bot.ftl"
#: The reference language: every other one has exactly its ids and variables.
REFERENCE_LANGUAGE = "en"

#: What a variable may hold: a text of its own (rendered in the same language) too.
Value: TypeAlias = "str | int | Text"


@dataclass(frozen=True, slots=True)
class Text:
    """A text to show: its message id in the .ftl files and the values of its variables."""

    id: str
    args: Mapping[str, Value] = field(default_factory=dict)


class TranslationError(Exception):
    """A .ftl file is broken or a text is missing: found at start-up, not by a user."""


class Catalog:
    """Every language's messages, parsed once; renders a `Text` in a language."""

    def __init__(self, directory: Path) -> None:
        #: The folder of the languages, one sub-folder per language code.
        self.directory = directory
        self._bundles: dict[str, FluentBundle] = {}
        self._spellings: dict[str, frozenset[str]] = {}
        self._plain: dict[tuple[str, str], str] = {}
        self._ids: dict[str, frozenset[str]] = {}
        #: (language, id) pairs already warned about: one warning each, not one per reply.
        self._fell_back: set[tuple[str, str]] = set()
        for path in sorted(directory.glob(f"*/{FTL_FILE}")):
            language = path.parent.name
            # No Unicode isolation marks: Telegram shows them as stray characters.
            resource = FluentResource(path.read_text(encoding="utf-8"))
            for entry in resource.body:
                if isinstance(entry, Junk):  # a line Fluent could not parse
                    first = (entry.content or "").strip().splitlines()[0]
                    raise TranslationError(f"{path}: not a Fluent message: {first!r}")
            self._ids[language] = frozenset(
                entry.id.name for entry in resource.body if isinstance(entry, Message)
            )
            bundle = FluentBundle([language], use_isolating=False)
            bundle.add_resource(resource)
            self._bundles[language] = bundle
        if REFERENCE_LANGUAGE not in self._bundles:
            raise TranslationError(f"{directory}: no {REFERENCE_LANGUAGE}/{FTL_FILE}")
        others = sorted(self._bundles.keys() - {REFERENCE_LANGUAGE})
        #: The languages the bot speaks, the reference one first.
        self.languages: tuple[str, ...] = (REFERENCE_LANGUAGE, *others)

    def render(self, language: str, text: Text) -> str:
        """`text` in `language` (an unknown language: the reference one)."""
        if text.args:
            return self._format(language, text)
        # A text without values is the same every time: formatted once per language.
        key = (language, text.id)
        plain = self._plain.get(key)
        if plain is None:
            plain = self._plain[key] = self._format(language, text)
        return plain

    def _format(self, language: str, text: Text) -> str:
        reference = self._bundles[REFERENCE_LANGUAGE]
        bundle = self._bundles.get(language) or reference
        if not bundle.has_message(text.id):
            if bundle is not reference and reference.has_message(text.id):
                # Start-up refuses this (cli.check_texts); a catalog used without that check
                # (a test client, a library user) still sends the reply, never drops it.
                self._fall_back(language, text.id)
                return self._format(REFERENCE_LANGUAGE, text)
            raise TranslationError(f"{language}/{FTL_FILE} has no message {text.id!r}")
        message = bundle.get_message(text.id)
        if message.value is None:
            raise TranslationError(f"{language}/{FTL_FILE} {text.id!r} has no text")
        # Numbers without grouping: "1000 characters", as the English texts always said;
        # plural selectors still see a number.
        args = {name: self._value(language, value) for name, value in text.args.items()}
        rendered, errors = bundle.format_pattern(message.value, args)
        if errors:
            raise TranslationError(f"{language}/{FTL_FILE} {text.id!r}: {errors[0]}")
        return str(rendered)

    def _fall_back(self, language: str, text_id: str) -> None:
        if (language, text_id) not in self._fell_back:
            self._fell_back.add((language, text_id))
            logger.warning(
                "%s/%s has no text %r: sent in %s instead",
                language,
                FTL_FILE,
                text_id,
                REFERENCE_LANGUAGE,
            )

    def _value(self, language: str, value: Value) -> Any:
        if isinstance(value, Text):
            return self.render(language, value)
        if isinstance(value, int):
            return fluent_number(value, useGrouping=False)
        return value

    def supported(self, language_code: str | None) -> str | None:
        """The language of ours a Telegram `language_code` means (`ru-RU` is `ru`), or None."""
        if not language_code:
            return None
        code = language_code.lower()
        if code in self._bundles:
            return code
        base = code.split("-")[0]
        return base if base in self._bundles else None

    def english(self, text: Text) -> str:
        """`text` in the reference language: what logs, tests and callback data use."""
        return self.render(REFERENCE_LANGUAGE, text)

    def missing(self, ids: Iterable[str] = ()) -> list[tuple[str, str]]:
        """(language, id) for each id of `ids` or of the reference language a language lacks.

        Checked at start-up: a reply in a language without its text would otherwise fail
        in front of the user who speaks it.
        """
        wanted = sorted({*ids, *self._ids[REFERENCE_LANGUAGE]})
        return [
            (language, text_id)
            for language, bundle in self._bundles.items()
            for text_id in wanted
            if not bundle.has_message(text_id)
        ]

    def spellings(self, text: Text) -> frozenset[str]:
        """`text` in every language: a typed word matching any of these means that word."""
        found = self._spellings.get(text.id)
        if found is None:
            found = frozenset(self.render(language, text) for language in self.languages)
            self._spellings[text.id] = found  # words take no values: one entry per id
        return found
