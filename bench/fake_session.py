"""An aiogram Bot session that answers in-process, so the benchmark measures bots, not networks.

Every variant sends its replies through the same `Bot` -> session path a real bot uses
(`Bot.__call__`, session middlewares, the method model); only the HTTP round trip to
Telegram is replaced by building the `Message` Telegram would have answered with. The
replies are recorded per chat so each run can check that every user got exactly the
conversation the flow expects.
"""

from __future__ import annotations

import datetime
import itertools
from collections import defaultdict
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from aiogram.client.session.base import BaseSession
from aiogram.methods import SendMessage, TelegramMethod
from aiogram.types import Chat, Message, User

if TYPE_CHECKING:
    from aiogram import Bot

BOT_USER = User(id=42, is_bot=True, first_name="Bench bot", username="bench_bot")
_EPOCH = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


class FakeTelegramSession(BaseSession):
    """Answers `sendMessage` with a valid `Message` and records the text; refuses anything else.

    Refusing unknown methods keeps the benchmark honest: a variant that made an extra
    API call would fail instead of quietly getting a cheap fake answer.
    """

    def __init__(self, *, record: bool = True) -> None:
        super().__init__()
        self.record = record
        self.sent: defaultdict[int | str, list[str]] = defaultdict(list)
        self.calls = 0
        self._message_ids = itertools.count(1)

    async def make_request(
        self, bot: Bot, method: TelegramMethod[Any], timeout: int | None = None
    ) -> Any:
        if not isinstance(method, SendMessage):
            raise NotImplementedError(
                f"the fake Telegram session only knows sendMessage, not {type(method).__name__}"
            )
        self.calls += 1
        if self.record:
            self.sent[method.chat_id].append(method.text)
        chat_id = method.chat_id
        return Message(
            message_id=next(self._message_ids),
            date=_EPOCH,
            chat=Chat(id=chat_id if isinstance(chat_id, int) else 0, type="private"),
            from_user=BOT_USER,
            text=method.text,
        )

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError("the benchmark never downloads files")
        yield b""  # pragma: no cover - makes this an async generator

    async def close(self) -> None:
        """Nothing to close: no connection was ever opened."""

    def forget(self) -> None:
        """Drop recorded replies between phases so memory reflects the phase being measured."""
        self.sent.clear()
