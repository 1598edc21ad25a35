"""The types botnodes is parameterised with, shared by every node of this bot.

`Ctx` is what a node can use besides its own data: the runtime's part (the Bot, the user's
language, `send_message`) and this bot's own (its settings, the food API, its texts). A new
service goes here as a field, and is built in `main.py`'s `create_ctx`.
"""

from __future__ import annotations

from dataclasses import dataclass

from botnodes.telegram import (
    BotContext,
    Buttons,
    Event,
    Text,
    UserId,
    buttons,
    said,
    user_display_name,
)
from botnodes.telegram.payments import PaymentDesk

from .food_api import FoodAPI
from .settings import Settings
from .texts import CATALOG, TEXTS, Texts

__all__ = [
    "Buttons",
    "Ctx",
    "Event",
    "UserId",
    "buttons",
    "means",
    "said",
    "user_display_name",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Ctx(BotContext):
    """Everything a node may use besides its own data; built once per process."""

    settings: Settings
    food_api: FoodAPI
    #: Telegram Payments (docs/payments.md); None with PAYMENTS=off.
    payments: PaymentDesk | None = None
    #: Every text a node may show: `ctx.texts.hungry_added(dish=text)`, checked by mypy.
    texts: Texts = TEXTS

    async def aclose(self) -> None:
        await self.food_api.close()


def means(said_text: str | None, word: Text) -> bool:
    """Whether what the user said is `word` in any language: typing `Да` is pressing `Да`.

    English words work for everyone, and a press always carries the English word.
    """
    return said_text is not None and said_text in CATALOG.spellings(word)
