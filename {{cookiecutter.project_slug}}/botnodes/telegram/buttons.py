"""Inline buttons that go through botnodes like typed text, and know when they are stale.

A button carries the word it stands for and the node visit it was shown on (`Node.visit`).
Pressing it is handled exactly as typing that word would be; a press from an older visit
(the user moved on since the message was sent, or pressed twice) is answered as out of date
and changes nothing, however many presses arrive at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiogram.filters.callback_data import CallbackData, CallbackDataException
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup

from .i18n import Catalog, Text


class Press(CallbackData, prefix="p"):
    """The callback data of a node's button: `p:<visit>:<word>`, within Telegram's 64 bytes."""

    visit: int
    word: str


def keyboard(visit: int, *words: str, labels: Sequence[str] | None = None) -> InlineKeyboardMarkup:
    """One row of buttons, each pressing `word` on the node visit `visit` (use `self.visit`).

    A button shows its word, or its entry of `labels` (the word in the user's language).
    Raises ValueError if a word makes the callback data longer than Telegram's 64 bytes.
    A visit is unique to its user (see `Node.visit`), so keyboards are built, not cached.
    """
    shown = words if labels is None else labels
    buttons = [
        InlineKeyboardButton(text=label, callback_data=Press(visit=visit, word=word).pack())
        for word, label in zip(words, shown, strict=True)
    ]
    return InlineKeyboardMarkup(inline_keyboard=[buttons])


@dataclass(frozen=True, slots=True)
class Buttons:
    """A node's buttons before they know the language: `buttons(self.visit, texts.button_yes())`.

    A press carries the English word (so it means the same whatever language showed it, and
    fits in 64 bytes); the button shows the word in the user's language.
    """

    visit: int
    words: tuple[Text, ...]

    def render(self, catalog: Catalog, language: str) -> InlineKeyboardMarkup:
        labels = [catalog.render(language, word) for word in self.words]
        return keyboard(self.visit, *map(catalog.english, self.words), labels=labels)


def buttons(visit: int, *words: Text) -> Buttons:
    """One row of buttons for the node visit `visit` (use `self.visit`), one per word."""
    return Buttons(visit, words)


def unpack_press(query: CallbackQuery) -> Press | None:
    """The press a callback query carries, or None if it is not one of our buttons."""
    if query.data is None:
        return None
    try:
        return Press.unpack(query.data)
    except (CallbackDataException, TypeError, ValueError):
        return None
