"""`:wait` in `python -m <bot> chat`: time passes for the bot, the timers that fall due fire."""

from __future__ import annotations

import io
from pathlib import Path

from {{ cookiecutter.project_slug }}.chat import Chat
from {{ cookiecutter.project_slug }}.config import Settings
from {{ cookiecutter.project_slug }}.testing import BotTestClient


async def test_wait_fires_the_cart_reminder_and_refuses_a_bad_duration(
    settings: Settings, tmp_path: Path
) -> None:
    out = io.StringIO()
    async with BotTestClient.start(settings) as client:
        chat = Chat(client, out, "alice", tmp_path / "chat.log")
        for line in ("hi", "Yes", "Pizza", ":wait soon", ":wait 29m"):
            assert await chat.handle(line)
        assert out.getvalue().splitlines()[-2:] == [
            "(:wait takes a duration, like 90, 30m, 24h or PT1H)",
            "(0:29:00 later)",
        ]
        assert await chat.handle(":wait 60")
        assert out.getvalue().splitlines()[-3:] == [
            "(0:01:00 later)",
            "bot> Still hungry? Your cart: Pizza",
            "     [1] Finish  [2] Cancel",
        ]
