"""The update routing of the README: private chats only, `/start` from anywhere, then nodes."""

from __future__ import annotations

from aiogram import Bot, Dispatcher, Router
from aiogram.filters import BaseFilter, Command
from aiogram.types import CallbackQuery, Message

from botnodes import Nodes, Outcome

from .buttons import Press
from .i18n import english
from .language import Languages, UseUserLanguage, build_language_router
from .middlewares import AnswerEveryPress, InFlightUpdates, ReplyWhenStateUnavailable
from .nodes import Start
from .nodes_types import Ctx, Event, UserId, event_id, event_to_user_id, user_display_name
from .texts import TEXTS

#: The hint for a sticker, photo...; in English (for tests), users read it in their language.
NOT_TEXT_TEXT = english(TEXTS.not_text())

AppNodes = Nodes[Ctx, Event, UserId]


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


def build_default_router(nodes: AppNodes) -> Router:
    """Commands that work whatever node the user is on."""
    router = Router(name=f"{__name__}.default")

    @router.message(Command("start"))
    async def start(message: Message) -> None:
        # `to` runs Start.on_enter, which sends the greeting; a re-delivered /start does not.
        await nodes.user(event_to_user_id(message)).to(
            Start(user_display_name(message), is_first_launch=True), event_id=event_id(message)
        )

    return router


def build_nodes_router(nodes: AppNodes, languages: Languages) -> Router:
    """Every other text message goes to the user's current node."""
    router = Router(name=f"{__name__}.nodes")
    router.message(IsTextMessage())(nodes.route)

    @router.callback_query(Press.filter())
    async def press(query: CallbackQuery) -> str | None:
        """A button press goes through the same route (and per-user lock) as a message."""
        outcome = await nodes.route(query)
        if outcome is not Outcome.STALE:
            return None
        # The returned text is the press's answer (see AnswerEveryPress).
        language = await languages.of(query.from_user.id)
        return languages.render(language, TEXTS.stale_press())

    @router.message()
    async def not_text(message: Message, bot: Bot) -> None:
        language = await languages.of(message.chat.id)
        await bot.send_message(message.chat.id, languages.render(language, TEXTS.not_text()))

    return router


def build_dispatcher(
    nodes: AppNodes, in_flight: InFlightUpdates | None = None, languages: Languages | None = None
) -> Dispatcher:
    """The dispatcher with all routers; `in_flight` (if given) counts running updates.

    `languages` is `ctx.languages` (without it: Telegram's language, no stored choices).
    """
    languages = languages or Languages()
    # botnodes keeps the state, so aiogram's own FSM (and its per-update storage) is off.
    dispatcher = Dispatcher(name=__name__, disable_fsm=True)
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
    personal_router.include_router(build_default_router(nodes))
    personal_router.include_router(build_language_router(languages))
    personal_router.include_router(build_nodes_router(nodes, languages))

    dispatcher.include_router(personal_router)
    return dispatcher
