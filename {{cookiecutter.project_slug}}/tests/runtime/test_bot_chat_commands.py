"""Commands of `python -m <bot> chat` that reach into the bot: time passing, the user's language.

The terminal itself (line editing, Ctrl+C, the log kept out of the conversation) is tested
through a pseudo-terminal in tests/ops/test_bot_chat.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from botnodes.devtools.chat_commands import Chat
from botnodes.testing import BotTestClient


@pytest.fixture
def chat(client: BotTestClient, tmp_path: Path) -> Chat:
    """The chat of `python -m <bot> chat` as alice, printing into a string."""
    return Chat(client, io.StringIO(), "alice", tmp_path / "chat.log")


async def type_lines(chat: Chat, *lines: str) -> list[str]:
    """Type each line; everything printed so far, line by line."""
    for line in lines:
        assert await chat.handle(line)
    assert isinstance(chat.out, io.StringIO)
    return chat.out.getvalue().splitlines()


async def test_wait_fires_the_cart_reminder_and_refuses_a_bad_duration(chat: Chat) -> None:
    printed = await type_lines(chat, "hi", "Yes", "Pizza", ":wait soon", ":wait 29m")
    assert printed[-2:] == [
        "(:wait takes a duration, like 90, 30m, 24h or PT1H)",
        "(0:29:00 later)",
    ]
    assert (await type_lines(chat, ":wait 60"))[-3:] == [
        "(0:01:00 later)",
        "bot> Still hungry? Your cart: Pizza",
        "     [1] Finish  [2] Cancel",
    ]


async def test_lang_talks_as_a_user_whose_telegram_reports_that_language(chat: Chat) -> None:
    lines = (":lang русский", ":lang ru", "hi", ":lang -", ":user 2", "hi")
    assert await type_lines(chat, *lines) == [
        "(:lang takes a language code, like ru or en-GB, or - for none)",
        "(Telegram now reports ru for user 1)",
        "bot> Привет, alice! Проголодались?",
        "     [1] Да  [2] Нет",
        "(Telegram now reports no language for user 1)",
        "(now talking as user 2, user2)",
        "bot> Hello, user2! Are you hungry?",
        "     [1] Yes  [2] No",
    ]
