"""Inline buttons that go through botnodes like typed text, and know when they are stale.

A button carries the word it stands for and the node visit it was shown on (`Node.visit`).
Pressing it is handled exactly as typing that word would be; a press from an older visit
(the user moved on since the message was sent, or pressed twice) is answered as out of date
and changes nothing, however many presses arrive at once.
"""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData, CallbackDataException
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup

#: The callback answer of a press on a message whose node visit is over.
STALE_PRESS_TEXT = "This menu is out of date."


class Press(CallbackData, prefix="p"):
    """The callback data of a node's button: `p:<visit>:<word>`, within Telegram's 64 bytes."""

    visit: int
    word: str


def keyboard(visit: int, *words: str) -> InlineKeyboardMarkup:
    """One row of buttons, each pressing `word` on the node visit `visit` (use `self.visit`).

    Raises ValueError if a word makes the callback data longer than Telegram's 64 bytes.
    A visit is unique to its user (see `Node.visit`), so keyboards are built, not cached.
    """
    buttons = [
        InlineKeyboardButton(text=word, callback_data=Press(visit=visit, word=word).pack())
        for word in words
    ]
    return InlineKeyboardMarkup(inline_keyboard=[buttons])


def unpack_press(query: CallbackQuery) -> Press | None:
    """The press a callback query carries, or None if it is not one of our buttons."""
    if query.data is None:
        return None
    try:
        return Press.unpack(query.data)
    except (CallbackDataException, TypeError, ValueError):
        return None
