"""Collects the order item by item and places it through the food API."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, ClassVar

from pydantic import BaseModel, Field

from botnodes import ByTimer, Node, after_commit
from botnodes.telegram import Text

from ..food_api import FoodOrderError, FoodOrderRefused
from ..nodes_types import Buttons, Ctx, Event, UserId, buttons, means, said, user_display_name
from ..texts import CATALOG, TEXTS
from . import checkout, start

#: The most characters a cart takes in one message: a long cart shows its newest items.
CART_TEXT_BUDGET = 1000


class HungryModel(BaseModel):
    """The cart is stored so it survives restarts while the user keeps choosing."""

    order: list[str] = Field(default_factory=list)
    #: The cart was recalled once already: a cart is recalled at most once.
    reminded: bool = False


class Hungry(Node[Ctx, Event, UserId, HungryModel]):
    """Every message adds an item; `Finish` orders, `Cancel` drops the cart.

    Left alone, a cart is recalled once (CART_REMINDER_AFTER) and dropped later
    (CART_EXPIRES_AFTER), both counted from the user's last message.
    """

    timeout_labels: ClassVar[Mapping[str, str]] = {
        "reminder": "CART_REMINDER_AFTER",
        "expiry": "CART_EXPIRES_AFTER",
    }

    def __init__(self, order: list[str] | None = None, *, reminded: bool = False) -> None:
        self._data = HungryModel(order=order or [], reminded=reminded)

    async def on_enter(self, user_id: UserId, ctx: Ctx) -> None:
        texts = ctx.texts
        shown = cart(self._data.order) if self._data.order else texts.hungry_cart_empty()
        await ctx.send_message(
            user_id, texts.hungry_ask(cart=shown), reply_markup=self._finish_or_cancel(ctx)
        )

    async def on_event(
        self, user_id: UserId, event: Event, ctx: Ctx
    ) -> start.Start | Hungry | checkout.Checkout | None:
        texts = ctx.texts
        text = said(event) or ""
        if means(text, texts.button_finish()):
            if not self._data.order:
                await ctx.send_message(user_id, texts.hungry_finish_empty())
                return Hungry([])
            if ctx.payments is not None:  # PAYMENTS=provider|stars: priced, then paid
                return await self._checkout(user_id, ctx)
            await ctx.send_message(user_id, texts.hungry_ordering(cart=cart(self._data.order)))
            # The order is irreversible, so it goes out only once the user is stored on the
            # main menu: if that step can't be stored, nothing was ordered and the user's
            # next Finish is the first. The key is new for every cart, for all time.
            ctx.will_reply(user_id)  # _place_order's answer: its send turn taken with this step's
            await after_commit(
                functools.partial(self._place_order, user_id, ctx, f"{user_id}:{self.visit}")
            )
            return start.Start(user_display_name(event))
        if means(text, texts.button_cancel()):
            await ctx.send_message(user_id, texts.hungry_cancelled())
            return start.Start(user_display_name(event))
        limits = ctx.settings.cart
        if len(text) > limits.max_dish_name_length:
            await ctx.send_message(
                user_id, texts.hungry_name_too_long(limit=limits.max_dish_name_length)
            )
            return None  # stay, the cart as it was
        if len(self._data.order) >= limits.max_cart_items:
            await ctx.send_message(user_id, texts.hungry_cart_full(limit=limits.max_cart_items))
            return None
        await ctx.send_message(user_id, texts.hungry_added(dish=text))
        return Hungry(order=[*self._data.order, text], reminded=self._data.reminded)

    def timeouts(self, ctx: Ctx) -> Mapping[str, float]:
        settings = ctx.settings.cart
        recall = bool(self._data.order) and not self._data.reminded
        return {
            "reminder": settings.cart_reminder_after.total_seconds() if recall else 0,
            "expiry": settings.cart_expires_after.total_seconds(),
        }

    async def on_timeout(
        self, user_id: UserId, name: str, ctx: Ctx
    ) -> Annotated[start.Start, ByTimer("expiry")] | Annotated[None, ByTimer("reminder")]:
        if name == "expiry":
            await ctx.send_message(user_id, ctx.texts.hungry_expired())
            return start.Start(username="")  # the greeting of a returning user needs no name
        self._data.reminded = True
        # A user who blocked the bot gets a 403: the reminder is logged as not sent and
        # dropped, never retried (it is stored as sent).
        await ctx.send_message(
            user_id,
            ctx.texts.hungry_reminder(cart=cart(self._data.order)),
            reply_markup=self._finish_or_cancel(ctx),
        )
        return None

    async def _checkout(self, user_id: UserId, ctx: Ctx) -> checkout.Checkout | None:
        """The food API prices the cart; the user pays the invoice on `Checkout`.

        A refusal or a price that can't be had keeps the user here with the cart as it was.
        """
        try:
            lines = await ctx.food_api.quote(user_id, self._data.order)
        except FoodOrderRefused as exc:
            ctx.logger.warning("Quote for user %s refused: %s", user_id, exc)
            await ctx.send_message(user_id, ctx.texts.checkout_quote_refused())
            return None
        except FoodOrderError as exc:
            ctx.logger.error("Quote for user %s failed: %s", user_id, exc)
            await ctx.send_message(user_id, ctx.texts.checkout_quote_failed())
            return None
        await ctx.send_message(user_id, ctx.texts.hungry_ordering(cart=cart(self._data.order)))
        return checkout.Checkout(self._data.order, lines)

    def _finish_or_cancel(self, ctx: Ctx) -> Buttons:
        return buttons(self.visit, ctx.texts.button_finish(), ctx.texts.button_cancel())

    async def _place_order(self, user_id: UserId, ctx: Ctx, key: str) -> None:
        """Runs after the step is stored; the food API retries what was not answered.

        Whatever goes wrong, the user hears it: the step is stored, so nothing else will.
        """
        try:
            await ctx.food_api.order_food(user_id, self._data.order, idempotency_key=key)
        except FoodOrderError as exc:
            ctx.logger.error(
                "Order %s for user %s failed: %s | items=%s", key, user_id, exc, self._data.order
            )
            await ctx.send_message(user_id, ctx.texts.hungry_order_failed())
        except Exception:
            ctx.logger.exception("Order %s for user %s failed", key, user_id)
            await ctx.send_message(user_id, ctx.texts.hungry_order_failed())
        else:
            await ctx.send_message(user_id, ctx.texts.hungry_ordered())


def cart_text(order: list[str], budget: int = CART_TEXT_BUDGET) -> str:
    """The cart as an English user reads it (see `cart`)."""
    shown = cart(order, budget)
    return shown if isinstance(shown, str) else CATALOG.english(shown)


def cart(order: list[str], budget: int = CART_TEXT_BUDGET) -> str | Text:
    """The cart in one line of at most about `budget` characters: all of it, or its newest items.

    Every reply that shows the cart stays one message, however much the cart holds; how many
    items there are is said by the translation (its plural forms), not pasted in here.
    """
    full = ", ".join(order)
    if len(full) <= budget:
        return full
    newest: list[str] = []
    room = budget - 40  # for the "N items, the last M: …, " prefix
    for item in reversed(order):
        if len(item) + 2 > room:
            break
        newest.insert(0, item)
        room -= len(item) + 2
    if not newest:
        newest = [order[-1][: budget - 41] + "…"]
    return TEXTS.hungry_cart_newest(count=len(order), shown=len(newest), items=", ".join(newest))
