"""Telegram's rules, kept in one place for every Bot API call the bot makes.

Two aiogram request middlewares on the bot's session, so no call site has to remember them:

- `KeepWithinLimits` splits a message longer than Telegram's 4,096 characters at line or word
  boundaries (buttons go on the last part), and shortens a callback answer to 200 characters:
  Telegram refuses both outright, and a refused reply would stop the conversation.
- `RetryTelegram` waits out flood control (429 with `retry_after`) and retries server errors and
  dropped connections with backoff, within a number of retries and a total wait.

What a retry can duplicate: a 429 or another 4xx means Telegram did not carry the call out, so
retrying it can't repeat anything. A 5xx, a dropped connection or a timeout may come after
Telegram delivered the message; retrying it may then show the user the same message twice.
The bot accepts that (a repeated reply is better than a lost one); it never applies to the
order, which is not a Bot API call, nor to a broadcast (`send_at_most_once`: a message to
everybody is not repeated on a guess).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import (
    AnswerCallbackQuery,
    GetMe,
    GetUpdates,
    SendMessage,
    TelegramMethod,
)
from aiogram.methods.base import Response, TelegramType

logger = logging.getLogger(__name__)

MAX_MESSAGE_LENGTH = 4096
MAX_CALLBACK_ANSWER_LENGTH = 200

#: Called on every retry with the method, the reason ("429", "server", "network") and the wait.
RetryHook = Callable[[str, str, float], None]

#: Calls whose failure their caller handles: polling retries getUpdates with its own backoff,
#: and a getMe that fails at start-up should say so at once (the process manager restarts).
_NOT_RETRIED = frozenset({GetUpdates.__api_method__, GetMe.__api_method__})

_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 8.0

_at_most_once: ContextVar[bool] = ContextVar("at_most_once", default=False)


@contextlib.contextmanager
def send_at_most_once() -> Iterator[None]:
    """Within this block a call is made once: every failure is raised to the caller.

    For a broadcast. A 5xx, a dropped connection or no answer may come after Telegram
    delivered the message: retrying it could deliver it twice, so the caller counts it as
    unconfirmed instead. And a 429's retry must take a new turn in the bulk budget, or every
    retry comes on top of the rate and a few 429s snowball into many.
    """
    token = _at_most_once.set(True)
    try:
        yield
    finally:
        _at_most_once.reset(token)


def split_text(text: str, limit: int = MAX_MESSAGE_LENGTH) -> list[str]:
    """Cut `text` into parts of at most `limit` characters, at a line break if there is one
    in the part, else at a space, else (one word longer than the limit) anywhere."""
    parts: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 1, limit + 1)
        if cut <= 0:
            cut = text.rfind(" ", 1, limit + 1)
        if cut <= 0:
            parts.append(text[:limit])
            text = text[limit:]
            continue
        parts.append(text[:cut])
        text = text[cut + 1 :]
    parts.append(text)
    return [part for part in parts if part.strip()] or [text]


class KeepWithinLimits(BaseRequestMiddleware):
    """Never sends what Telegram refuses for its length: long texts go out in parts."""

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        # Entity offsets can't follow a split: a message with entities is sent as it is.
        too_long = isinstance(method, SendMessage) and len(method.text) > MAX_MESSAGE_LENGTH
        if too_long and isinstance(method, SendMessage) and not method.entities:
            sent: Response[TelegramType] = await self._send_in_parts(make_request, bot, method)
            return sent
        answer = method.text if isinstance(method, AnswerCallbackQuery) else None
        if answer and len(answer) > MAX_CALLBACK_ANSWER_LENGTH:
            shortened = answer[: MAX_CALLBACK_ANSWER_LENGTH - 1] + "…"
            method = method.model_copy(update={"text": shortened})
        return await make_request(bot, method)

    @staticmethod
    async def _send_in_parts(
        make_request: NextRequestMiddlewareType[Any], bot: Bot, method: SendMessage
    ) -> Any:
        parts = split_text(method.text)
        result: Any = None
        for number, part in enumerate(parts, 1):
            last = number == len(parts)
            update: dict[str, Any] = {"text": part}
            if not last:  # the buttons belong under the end of the text
                update["reply_markup"] = None
            result = await make_request(bot, method.model_copy(update=update))
        return result


class RetryTelegram(BaseRequestMiddleware):
    """Waits out 429s and retries 5xx and network failures, within a budget and a deadline.

    `call_timeout` bounds one call from start to end, retries, waits and each request's own
    time included: a Bot API that never answers costs that long, not a request timeout per
    retry. A 429 asking for longer than the time left fails the call at once.
    """

    def __init__(
        self,
        max_retries: int,
        max_wait: float,
        on_retry: RetryHook | None = None,
        *,
        call_timeout: float | None = None,
    ) -> None:
        self._max_retries = max_retries
        self._max_wait = max_wait
        self._on_retry = on_retry
        self._call_timeout = call_timeout

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        if method.__api_method__ in _NOT_RETRIED:
            return await make_request(bot, method)
        if self._call_timeout is None:
            return await self._with_retries(make_request, bot, method, deadline=None)
        deadline = asyncio.get_running_loop().time() + self._call_timeout
        try:
            async with asyncio.timeout_at(deadline):
                return await self._with_retries(make_request, bot, method, deadline)
        except TimeoutError:
            name = method.__api_method__
            logger.warning(
                "Telegram %s: no answer within the call timeout (%.1fs)", name, self._call_timeout
            )
            raise TelegramNetworkError(
                method, f"no answer within {self._call_timeout:g}s, retries included"
            ) from None

    async def _with_retries(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
        deadline: float | None,
    ) -> Response[TelegramType]:
        if _at_most_once.get():
            return await make_request(bot, method)
        waited = 0.0
        attempt = 0
        failure: TelegramAPIError
        while True:
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as error:
                reason, delay, failure = "429", float(error.retry_after), error
            except TelegramServerError as error:
                reason, delay, failure = "server", self._backoff(attempt), error
            except TelegramNetworkError as error:
                reason, delay, failure = "network", self._backoff(attempt), error
            attempt += 1
            name = method.__api_method__
            left = math.inf if deadline is None else deadline - asyncio.get_running_loop().time()
            if attempt > self._max_retries or waited + delay > self._max_wait or delay >= left:
                logger.warning(
                    "Telegram %s on %s: giving up after %d retries and %.1fs of waiting",
                    reason,
                    name,
                    attempt - 1,
                    waited,
                )
                raise failure
            logger.warning("Telegram %s on %s: retry %d in %.1fs", reason, name, attempt, delay)
            if self._on_retry is not None:
                self._on_retry(name, reason, delay)
            await asyncio.sleep(delay)
            waited += delay

    @staticmethod
    def _backoff(attempt: int) -> float:
        return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))  # noqa: S311
