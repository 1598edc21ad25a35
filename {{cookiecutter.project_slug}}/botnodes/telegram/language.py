"""Which language each user gets, and `/language` to choose one.

The language of a user is, first, the one they chose with `/language`; else the language
Telegram reports for them (`language_code`, `ru-RU` meaning `ru`) if the bot has it; else
DEFAULT_LANGUAGE. The choice is a small Redis key of its own, `<STATE_KEY>:{<user id>}:language`
(the user's hash tag, so it sits in the user's slot on a Redis Cluster), never node data: it
survives moving between nodes, resets, STATE_TTL and migrations.

Cost: for an update that reaches the nodes, the key is read by botnodes' lock script, in the
same `MGET` as the user's state (`Nodes.read_with_lock`): no command, script or round trip of
its own. An update handled outside the nodes (`/language`, a hint) reads it with one tiny
script of its own, started on the loop's next turn when the lock script has not taken the read
by then, and joined in the same pipeline as botnodes' own scripts (`Nodes.run_script`). The
text is rendered only when a reply is sent, by which time the read is done. Timers, which have
no update, read it the same way: the key also keeps the language Telegram reported last
(marked with `~`), so a reminder speaks it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiogram import BaseMiddleware, Bot, Router
from aiogram.filters import Command
from aiogram.filters.callback_data import CallbackData
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    TelegramObject,
    User,
)
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from ..storage import NoteRead
from ..storage_scripts import NOTE_FUNCTION
from .i18n import REFERENCE_LANGUAGE, Catalog, Text
from .redis_connection import RedisClient
from .texts import RUNTIME_TEXTS

logger = logging.getLogger(__name__)

Runner = Callable[[AsyncScript, list[str], list[str]], Awaitable[Any]]
Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

#: KEYS[1] the user's language key; ARGV[1] the language Telegram reports now ('' = none).
#: A choice is stored as it is and wins; a reported language is kept as `~<language>`, written
#: only when it changes, so a user's first update (or a new phone language) costs the one write.
#: The same rule as the lock script's read (NOTE_FUNCTION); a key of another type reads as none.
READ_LANGUAGE = (
    NOTE_FUNCTION
    + """
local stored = redis.pcall('GET', KEYS[1])
if type(stored) == 'table' then stored = false end
return noted(KEYS[1], stored, ARGV[1])
"""
)


@dataclass(slots=True)
class _Pending:
    """The language read for the update being handled, whose it is, and who reads it."""

    user_id: int
    reported: str
    language: asyncio.Future[str]
    #: Nobody reads it yet: the lock script may take it (`ride`), else it is read alone.
    open: bool = True


_current: contextvars.ContextVar[_Pending | None] = contextvars.ContextVar(
    "update_language", default=None
)


class Languages:
    """Finds, stores and renders in each user's language; without Redis, no choices are kept."""

    def __init__(
        self,
        catalog: Catalog,
        default: str = REFERENCE_LANGUAGE,
        *,
        redis: RedisClient | None = None,
        key_prefix: str = "nodes_state",
    ) -> None:
        self.catalog = catalog
        self.default = default
        self._redis = redis
        self._prefix = key_prefix
        self._script = redis.register_script(READ_LANGUAGE) if redis is not None else None
        self._run: Runner | None = None

    def batch_with(self, run: Runner) -> None:
        """Send the reads in botnodes' batches (`nodes.run_script`): no round trip of their own."""
        self._run = run

    def key(self, user_id: int) -> str:
        hash_tag = "{" + str(user_id) + "}"  # the user's slot on a Redis Cluster
        return f"{self._prefix}:{hash_tag}:language"

    def render(self, language: str, text: Text) -> str:
        return self.catalog.render(language, text)

    def reported(self, user: User | None) -> str:
        """The language Telegram reports for `user`, as one of ours ('' if it reports none)."""
        if user is None or not user.language_code:
            return ""
        return self.catalog.supported(user.language_code) or self.default

    def begin(self, user: User) -> contextvars.Token[_Pending | None]:
        """Start reading `user`'s language for the update being handled (see the middleware).

        The lock script of the update takes the read when it is sent in this turn of the
        loop (`ride`); otherwise the read is sent alone on the next turn.
        """
        loop = asyncio.get_running_loop()
        pending = _Pending(user.id, self.reported(user), loop.create_future())
        if self._script is None:
            self._settle(pending, pending.reported)
        else:
            loop.call_soon(self._read_unless_taken, pending)
        return _current.set(pending)

    @staticmethod
    def end(token: contextvars.Token[_Pending | None]) -> None:
        _current.reset(token)

    def ride(self, user_id: Any) -> NoteRead | None:
        """The read of `user_id`'s language for the lock script taking their lock, if one is
        due (`Nodes.read_with_lock`): the update being handled is theirs and nobody reads it."""
        pending = _current.get()
        if pending is None or pending.user_id != user_id or not pending.open:
            return None
        pending.open = False

        def done(found: str | None) -> None:
            if found is None:  # not read by this try: the next one, or a read of its own
                pending.open = True
            else:
                self._settle(pending, found)

        return NoteRead(self.key(user_id), pending.reported, done)

    async def of(self, user_id: int) -> str:
        """The language to talk to `user_id` in now."""
        pending = _current.get()
        if pending is not None and pending.user_id == user_id:
            self._read_unless_taken(pending)
            return await pending.language
        return await self._read(user_id, "")

    def _read_unless_taken(self, pending: _Pending) -> None:
        if not pending.open or pending.language.done():
            return
        pending.open = False
        read = asyncio.ensure_future(self._read(pending.user_id, pending.reported))

        def settle(done: asyncio.Future[str]) -> None:
            if done.cancelled():
                self._settle(pending, pending.reported)
            elif not pending.language.done():
                pending.language.set_result(done.result())

        read.add_done_callback(settle)

    def _settle(self, pending: _Pending, found: str) -> None:
        if not pending.language.done():
            pending.language.set_result(self.catalog.supported(found) or self.default)

    async def learn(self, user_id: int, language_code: str | None) -> str:
        """Note what Telegram reports for a user outside an update (the test client's `to`)."""
        reported = self.catalog.supported(language_code) or self.default if language_code else ""
        return await self._read(user_id, reported)

    async def choose(self, user_id: int, language: str) -> None:
        """Store the user's choice; it wins over what Telegram reports from now on."""
        if self._redis is not None:
            await self._redis.set(self.key(user_id), language)

    async def _read(self, user_id: int, reported: str) -> str:
        """The user's language; if Redis can't say, the reported one or the default."""
        found: Any = reported
        if self._script is not None:
            keys, args = [self.key(user_id)], [reported]
            try:
                if self._run is not None:
                    found = await self._run(self._script, keys, args)
                else:
                    found = await self._script(keys=keys, args=args)
            except (RedisError, OSError) as exc:
                logger.info("Language of user %s not read, using %r: %s", user_id, reported, exc)
        if isinstance(found, bytes):
            found = found.decode(errors="replace")
        return self.catalog.supported(str(found or "")) or self.default


class UseUserLanguage(BaseMiddleware):
    """Starts reading the user's language as each message or press arrives (a middleware).

    Installed outside every other handler middleware, so even "can't reach my memory" is
    said in the user's language (from Telegram's report when Redis is away).
    """

    def __init__(self, languages: Languages) -> None:
        self._languages = languages

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user = getattr(event, "from_user", None)
        if not isinstance(user, User):
            return await handler(event, data)
        token = self._languages.begin(user)
        try:
            return await handler(event, data)
        finally:
            Languages.end(token)


class LanguageChoice(CallbackData, prefix="lang"):
    """The callback data of a `/language` button: `lang:<code>`."""

    code: str


def language_keyboard(languages: Languages) -> InlineKeyboardMarkup:
    """One button per language, each named in its own language."""
    buttons = [
        InlineKeyboardButton(
            text=languages.render(code, RUNTIME_TEXTS.language_name()),
            callback_data=LanguageChoice(code=code).pack(),
        )
        for code in languages.catalog.languages
    ]
    return InlineKeyboardMarkup(inline_keyboard=[buttons])


#: True the first time an update is seen, False for a re-delivery (`Nodes.mark_handled`).
FirstDelivery = Callable[[Message | CallbackQuery], Awaitable[bool]]


async def _always(_: Message | CallbackQuery) -> bool:
    return True


def build_language_router(languages: Languages, first: FirstDelivery = _always) -> Router:
    """`/language` from any node; the choice is not a step of the flow, so no node changes.

    No step is stored, so nothing records the update as handled: `first` does, and a
    re-delivered `/language` or press is not answered twice.
    """
    router = Router(name=f"{__name__}.language")

    @router.message(Command("language"))
    async def menu(message: Message, bot: Bot) -> None:
        if not await first(message):
            return
        language = await languages.of(message.chat.id)
        await bot.send_message(
            message.chat.id,
            languages.render(language, RUNTIME_TEXTS.language_menu()),
            reply_markup=language_keyboard(languages),
        )

    @router.callback_query(LanguageChoice.filter())
    async def choose(query: CallbackQuery, callback_data: LanguageChoice, bot: Bot) -> str | None:
        if not await first(query):
            return None
        code = languages.catalog.supported(callback_data.code)
        if code is None:  # a language this deploy no longer has: the menu is out of date
            language = await languages.of(query.from_user.id)
            return languages.render(language, RUNTIME_TEXTS.stale_press())  # the press's answer
        await languages.choose(query.from_user.id, code)
        await bot.send_message(
            query.from_user.id, languages.render(code, RUNTIME_TEXTS.language_chosen())
        )
        return None

    return router
