"""The types botnodes is parameterised with, shared by every node of this bot."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TypeAlias

from aiogram import Bot
from aiogram.types import CallbackQuery, Message

from botnodes import after_commit

from .buttons import Buttons, unpack_press
from .config import Settings
from .food_api import FoodAPI
from .i18n import CATALOG, Text
from .language import Languages
from .send_limits import expect_reply
from .texts import TEXTS, Texts

#: What reaches the nodes: a text message, or a press of one of their buttons.
Event: TypeAlias = Message | CallbackQuery
UserId: TypeAlias = int


@dataclass(frozen=True, slots=True)
class Ctx:
    """Everything a node may use besides its own data; built once per process."""

    bot: Bot
    settings: Settings
    food_api: FoodAPI
    logger: logging.Logger
    #: Each user's language (without Redis: Telegram's report, else English).
    languages: Languages = field(default_factory=Languages)
    #: Every text a node may show: `ctx.texts.hungry_added(dish=text)`, checked by mypy.
    texts: Texts = TEXTS

    async def send_message(
        self, user_id: UserId, text: Text, reply_markup: Buttons | None = None
    ) -> None:
        """Send a reply, in the user's language, once the transition that produced it is stored.

        Nodes reply through this rather than `bot.send_message`: if the step can't be stored,
        the user is not told it happened; if a reply fails after an irreversible step (an
        order), the step is stored anyway and can't be repeated by the user's next message.
        Outside a transition it sends at once. The words are chosen only now, when the
        user's language (read while the step ran) is known. Counting the reply here lets the
        first one reserve the chat's send turns for all of the step's replies in one Redis call.
        """

        async def send() -> None:
            language = await self.languages.of(user_id)
            markup = reply_markup.render(self.languages.catalog, language) if reply_markup else None
            await self.bot.send_message(
                user_id, self.languages.render(language, text), reply_markup=markup
            )

        expect_reply(user_id)
        await after_commit(send)


def event_to_user_id(event: Event) -> UserId:
    """The Telegram user an event belongs to; botnodes keys the state by it."""
    if isinstance(event, CallbackQuery):
        return event.from_user.id
    # Only private chats reach the nodes, and there the chat id is the user id.
    return event.from_user.id if event.from_user else event.chat.id


def said(event: Event) -> str | None:
    """What the user typed, or the word of the button they pressed: nodes compare this.

    A press and typing its word are the same to a node, so every button also works typed.
    """
    if isinstance(event, CallbackQuery):
        press = unpack_press(event)
        return press.word if press else None
    return event.text


def means(said_text: str | None, word: Text) -> bool:
    """Whether what the user said is `word` in any language: typing `Да` is pressing `Да`.

    English words work for everyone, and a press always carries the English word.
    """
    return said_text is not None and said_text in CATALOG.spellings(word)


def event_visit(event: Event) -> int | None:
    """The node visit a button was shown on; None for typed text (botnodes' `event_visit`)."""
    if isinstance(event, CallbackQuery):
        press = unpack_press(event)
        return press.visit if press else None
    return None


def event_id(event: Event) -> str:
    """What identifies this very update for its user (botnodes' `event_id`).

    Telegram sends an update again when it saw no answer (a webhook delivery that failed, a
    poller that died before confirming it); botnodes then finds the id among the user's
    handled events and does nothing. A message id is unique in its chat, a query id for all.
    """
    if isinstance(event, CallbackQuery):
        return f"c{event.id}"
    return f"m{event.message_id}"


def user_display_name(event: Event) -> str:
    """How to greet the sender: the @username if set, else the name Telegram shows."""
    user = event.from_user
    if user is None:
        return "friend"
    return user.username or user.full_name
