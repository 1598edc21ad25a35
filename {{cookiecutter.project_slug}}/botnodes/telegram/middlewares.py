"""Middlewares that make the bot safe to stop and polite when Redis is down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, Message, TelegramObject

from botnodes import StateTooLargeError, StateUnavailableError, TransitionLostError, UserBusyError

from .language import Languages
from .texts import RUNTIME_TEXTS

logger = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class InFlightUpdates(BaseMiddleware):
    """Counts updates being handled so shutdown can wait for them.

    aiogram stops polling on SIGTERM but does not wait for the handler tasks it started;
    without this a `docker stop` could cut a transition in half.
    """

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        self._count += 1
        self._idle.clear()
        try:
            return await handler(event, data)
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no update is in flight (bound it with `asyncio.timeout`)."""
        await self._idle.wait()


class ReplyWhenStateUnavailable(BaseMiddleware):
    """Tells the user, in words that are true, when botnodes could not handle their update.

    - StateUnavailableError: nothing changed (Redis away, lock busy), so they can repeat it.
    - UserBusyError: they have many updates queued already; this one was skipped.
    - TransitionLostError: the node ran but its result was not stored; they are where they
      were, and nothing happened: the only irreversible step, the order, goes out only once
      its step is stored (StateTooLargeError: the step would have stored too much).

    A message gets the text as a reply; a button press gets it as the press's answer (the
    handler's return value, which `AnswerEveryPress` sends), in the user's language.
    """

    def __init__(self, languages: Languages) -> None:
        self._languages = languages

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        try:
            return await handler(event, data)
        except (StateUnavailableError, TransitionLostError) as exc:
            if isinstance(exc, UserBusyError):
                told = RUNTIME_TEXTS.user_busy()
            elif isinstance(exc, StateTooLargeError):
                told = RUNTIME_TEXTS.state_too_large()
            elif isinstance(exc, TransitionLostError):
                told = RUNTIME_TEXTS.transition_lost()
            else:
                told = RUNTIME_TEXTS.state_unavailable()
            from_user = getattr(event, "from_user", None)
            user_id = from_user.id if from_user else None
            language = await self._languages.of(user_id) if user_id else self._languages.default
            text = self._languages.render(language, told)
            # botnodes has logged the cause already; note only what the user was told.
            logger.info("Told user %s the update was not handled: %s", user_id, exc)
            if isinstance(event, CallbackQuery):
                return text
            if isinstance(event, Message):
                bot: Bot = data["bot"]
                try:
                    await bot.send_message(event.chat.id, text)
                except TelegramAPIError as send_exc:
                    logger.warning("Could not tell user %s to retry: %s", user_id, send_exc)
            return None


class AnswerEveryPress(BaseMiddleware):
    """Answers every callback query exactly once, so the client's spinner always stops.

    It wraps the whole dispatch of a press (an outer middleware): handled or not, failed or
    not, the press is answered once, with the text the handler returned if it returned one.
    """

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        text: str | None = None
        try:
            result = await handler(event, data)
            if isinstance(result, str):
                text = result
            return result
        finally:
            if isinstance(event, CallbackQuery):
                bot: Bot = data["bot"]
                try:
                    await bot.answer_callback_query(event.id, text=text)
                except TelegramAPIError as exc:
                    logger.warning("Could not answer the press %s: %s", event.id, exc)
