"""Wires this bot: its nodes, settings and aiogram routers, handed to the botnodes runtime.

This is the botnodes README's `main.py`: the start node of a new user, the context the nodes
get, and the routers (commands that work from any node, then `nodes.route`). Everything else
(Redis, polling or webhooks, Telegram's limits, languages, metrics) is the runtime's, which
`python -m <package>` runs with `BOT`; the tests and `chat` build the same `BOT`.
"""

from __future__ import annotations

import functools
import logging

from aiogram import Bot, Router
from aiogram.filters import Command
from aiogram.types import Message

from botnodes import Nodes
from botnodes.telegram import (
    BotDefinition,
    IsTextMessage,
    event_id,
    event_to_user_id,
    user_display_name,
)
from botnodes.telegram.language import Languages
from botnodes.telegram.payments import PaymentDesk

from .food_api import create_food_api
from .nodes import Start, nodes_dict
from .nodes.checkout import place_paid_order
from .nodes_types import Ctx, Event, UserId
from .settings import Settings
from .texts import CATALOG, TEXTS

logger = logging.getLogger(__package__ or __name__)


def get_start_node(event: Event) -> Start:
    """The node of a user botnodes has never seen (or had to reset)."""
    return Start(user_display_name(event), is_first_launch=True)


def create_ctx(bot: Bot, languages: Languages, settings: Settings) -> Ctx:
    """The nodes' context: the runtime's parts, and this bot's settings and services."""
    return Ctx(
        bot=bot,
        languages=languages,
        logger=logger,
        settings=settings,
        food_api=create_food_api(settings.food_api),
        payments=create_payment_desk(bot, languages, settings),
    )


def create_payment_desk(bot: Bot, languages: Languages, settings: Settings) -> PaymentDesk | None:
    """Telegram Payments with PAYMENTS=provider or stars; None (today's bot) with off."""
    if not settings.payments.enabled:
        return None
    return PaymentDesk(
        bot, languages, settings.payments, TEXTS, key_prefix=settings.state.state_key
    )


def build_routers(nodes: Nodes[Ctx, Event, UserId]) -> list[Router]:
    """The README's routers: commands from any node, then every text message to the nodes.

    The runtime puts them inside its own (private chats only, `/language`, button presses).
    """
    default_router = Router(name="default")

    @default_router.message(Command("start"))
    async def start(message: Message) -> None:
        # `to` runs Start.on_enter, which sends the greeting; a re-delivered /start does not.
        await nodes.user(event_to_user_id(message)).to(
            Start(user_display_name(message), is_first_launch=True), event_id=event_id(message)
        )

    nodes_router = Router(name="nodes")
    nodes_router.message(IsTextMessage())(nodes.route)
    payments = nodes.ctx.payments
    if payments is None:
        return [default_router, nodes_router]
    # Pre-checkout, payments, /paysupport and /terms: answered without the user's turn.
    payments_router = payments.bind(
        nodes,
        fulfil=functools.partial(place_paid_order, nodes.ctx),
        then=lambda: Start(username=""),
    )
    return [payments_router, default_router, nodes_router]


BOT: BotDefinition[Ctx, Settings] = BotDefinition(
    package=__package__ or __name__.rpartition(".")[0],
    nodes_dict=nodes_dict,
    start_node=Start,
    get_start_node=get_start_node,
    catalog=CATALOG,
    settings_class=Settings,
    create_ctx=create_ctx,
    build_routers=build_routers,
)
