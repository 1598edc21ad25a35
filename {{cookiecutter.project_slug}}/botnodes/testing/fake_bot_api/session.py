"""`FakeSession`: an aiogram `Bot` answered by `FakeTelegram`, in process and without a network.

Telegram's refusals reach the bot through aiogram's own error handling, so the exceptions a bot
sees here are the ones it sees from Telegram.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncGenerator
from typing import Any

from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType

from .calls import Dropped, Refusal, Stalled, UnknownMethodError
from .fake_telegram import FakeTelegram


@functools.cache
def _response_type(returning: Any) -> Any:
    """`Response[returning]`, built once per type: pydantic builds a new class on each use."""
    return Response[returning]


class FakeSession(BaseSession):
    """An aiogram session that answers from `FakeTelegram` instead of the network."""

    def __init__(self, telegram: FakeTelegram | None = None) -> None:
        super().__init__()
        self.telegram = telegram or FakeTelegram()

    async def make_request(
        self, bot: Bot, method: TelegramMethod[TelegramType], timeout: int | None = None
    ) -> TelegramType:
        # The parameters as aiogram's HTTP session prepares them (defaults applied), kept as
        # Python values instead of JSON strings: the rules are the same, the benchmark that
        # reuses this session pays no JSON round trip per reply.
        files: dict[str, Any] = {}
        params = {
            key: prepared
            for key, value in method.model_dump(warnings=False, exclude_none=True).items()
            if (prepared := self.prepare_value(value, bot=bot, files=files, _dumps_json=False))
            is not None
        }
        latency = self.telegram.latency
        if latency is not None:
            await latency.trip()
        try:
            result = self.telegram.answer(method.__api_method__, params)
        except Dropped:
            raise TelegramNetworkError(method, "Server disconnected") from None
        except Stalled:
            await asyncio.Event().wait()  # a Bot API that never answers: only a timeout ends it
        except Refusal as refusal:
            # aiogram turns the error body into TelegramBadRequest, TelegramRetryAfter, ...
            # (a body that is not JSON into ClientDecodeError, as from the network)
            raw = refusal.raw if refusal.raw is not None else json.dumps(refusal.body())
            if latency is not None:
                await latency.trip()  # the refusal's way back
            self.check_response(bot, method, refusal.status, raw)
            raise AssertionError("check_response accepted an error") from None
        if latency is not None:
            await latency.trip()  # the answer's way back
        # Validated by aiogram's own response model, as an HTTP answer would be.
        response = _response_type(method.__returning__).model_validate(
            {"ok": True, "result": result}, context={"bot": bot}
        )
        return response.result  # type: ignore[no-any-return]

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        raise UnknownMethodError(f"no file at {url}")
        yield b""  # type: ignore[unreachable]  # an async generator, like the base class

    async def close(self) -> None:
        """Nothing to close: no network."""
