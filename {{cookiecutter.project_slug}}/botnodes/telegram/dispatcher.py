"""The update routing of the botnodes README, around a bot's own routers.

Private chats only; the user's language read first, so every text below is in it; `/language`
from any node; then the bot's routers (its commands and `nodes.route`); then what no node
reads: a press of a node's button goes through the same route, and a sticker gets a hint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiogram import Bot, Dispatcher, Router
from aiogram.filters import BaseFilter
from aiogram.types import CallbackQuery, Message

from botnodes import Nodes, Outcome

from .buttons import Press
from .events import event_id, event_to_user_id
from .language import FirstDelivery, Languages, UseUserLanguage, build_language_router
from .middlewares import AnswerEveryPress, InFlightUpdates, ReplyWhenStateUnavailable
from .texts import RUNTIME_TEXTS
from .update_order import NoteUpdateId


# aiogram runs non-async filters (including plain `F.text == ...`) in a worker thread via
# asyncio.to_thread; these filters are async so every update stays on the event loop.
class IsPrivateChatMessage(BaseFilter):
    """Only one-to-one chats have a per-user conversation."""

    async def __call__(self, event: Message) -> bool:
        return event.chat.type == "private"


class IsPrivateChatPress(BaseFilter):
    """A press of a button on a message in a one-to-one chat."""

    async def __call__(self, event: CallbackQuery) -> bool:
        return event.message is not None and event.message.chat.type == "private"


class IsTextMessage(BaseFilter):
    """Nodes compare `event.text`; stickers, photos and the like get a hint instead."""

    async def __call__(self, event: Message) -> bool:
        return event.text is not None


def first_delivery(nodes: Nodes[Any, Any, Any]) -> FirstDelivery:
    """For handlers outside the nodes: marks the update handled, False if it was before.

    The nodes' own updates are marked by the commit that stores their step, at no cost.
    """

    async def first(event: Message | CallbackQuery) -> bool:
        return await nodes.mark_handled(event_to_user_id(event), event_id(event))

    return first


def build_fallback_router(nodes: Nodes[Any, Any, Any], languages: Languages) -> Router:
    """Presses of the nodes' buttons, and messages no router above took."""
    router = Router(name=f"{__name__}.fallback")
    first = first_delivery(nodes)

    @router.callback_query(Press.filter())
    async def press(query: CallbackQuery) -> str | None:
        """A button press goes through the same route (and per-user lock) as a message."""
        outcome = await nodes.route(query)
        if outcome is not Outcome.STALE:
            return None
        # The returned text is the press's answer (see AnswerEveryPress).
        language = await languages.of(query.from_user.id)
        return languages.render(language, RUNTIME_TEXTS.stale_press())

    @router.message()
    async def not_text(message: Message, bot: Bot) -> None:
        if not await first(message):  # a re-delivered sticker gets its hint once
            return
        language = await languages.of(message.chat.id)
        await bot.send_message(
            message.chat.id, languages.render(language, RUNTIME_TEXTS.not_text())
        )

    return router


def build_dispatcher(
    routers: Sequence[Router],
    nodes: Nodes[Any, Any, Any],
    languages: Languages,
    in_flight: InFlightUpdates | None = None,
) -> Dispatcher:
    """The dispatcher with the bot's `routers` inside the runtime's; `in_flight` counts updates.

    `languages` is `ctx.languages`.
    """
    # botnodes keeps the state, so aiogram's own FSM (and its per-update storage) is off.
    dispatcher = Dispatcher(name=__name__, disable_fsm=True)
    dispatcher.update.outer_middleware(NoteUpdateId())  # the order across replicas
    if in_flight is not None:
        dispatcher.update.outer_middleware(in_flight)
    dispatcher.callback_query.outer_middleware(AnswerEveryPress())

    personal_router = Router(name=f"{__name__}.personal")
    personal_router.message.filter(IsPrivateChatMessage())
    personal_router.callback_query.filter(IsPrivateChatPress())
    # The language first: every text below, errors included, is in the user's language.
    for observer in (personal_router.message, personal_router.callback_query):
        observer.middleware(UseUserLanguage(languages))
        observer.middleware(ReplyWhenStateUnavailable(languages))
    personal_router.include_router(build_language_router(languages, first_delivery(nodes)))
    personal_router.include_routers(*routers)
    personal_router.include_router(build_fallback_router(nodes, languages))

    dispatcher.include_router(personal_router)
    return dispatcher
