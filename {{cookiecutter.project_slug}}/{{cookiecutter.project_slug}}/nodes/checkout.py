"""Pays for the order (PAYMENTS=provider or stars): the invoice is out, Telegram takes the money.

`Hungry` priced the cart and sent the user here. On arrival the invoice goes out; the payment
itself never reaches this node: Telegram's pre-checkout and payment updates go to the
payment desk (botnodes/telegram/payments.py), which checks them against what was invoiced,
places the order once through `place_paid_order` below and refunds what can't be ordered.
Leaving this node (Cancel, the cart's expiry, /start) makes the invoice stale: paying it
afterwards is refused before any money moves.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, ClassVar

from pydantic import BaseModel

from botnodes import ByTimer, Node, after_commit
from botnodes.telegram.invoices import Paid, PaymentRefused, format_amount

from ..food_api import FoodOrderRefused
from ..nodes_types import Ctx, Event, UserId, buttons, means, said, user_display_name
from . import start

#: Telegram shows at most this much of an invoice's description.
DESCRIPTION_BUDGET = 200


class CheckoutModel(BaseModel):
    """The cart and its price as quoted: what the invoice asks for."""

    order: list[str]
    #: (label, amount in the currency's smallest units), as the food API quoted them.
    lines: list[tuple[str, int]]


class Checkout(Node[Ctx, Event, UserId, CheckoutModel]):
    """Sends the invoice and waits; `Cancel` drops the order (and makes the invoice stale)."""

    timeout_labels: ClassVar[Mapping[str, str]] = {"expiry": "CART_EXPIRES_AFTER"}

    def __init__(self, order: list[str], lines: list[tuple[str, int]]) -> None:
        self._data = CheckoutModel(order=order, lines=lines)

    async def on_enter(self, user_id: UserId, ctx: Ctx) -> None:
        payments = ctx.payments
        if payments is None:  # payments were turned off meanwhile: the next message leaves
            return
        texts = ctx.texts
        # The invoice is bound to this visit: once the user leaves, it can't be paid.
        await after_commit(
            functools.partial(
                payments.send_invoice,
                user_id,
                self.visit,
                title=texts.checkout_title(),
                description=texts.checkout_description(cart=self._described()),
                lines=self._data.lines,
                items=self._data.order,
            )
        )
        await ctx.send_message(
            user_id,
            texts.checkout_pay(total=self._total(ctx)),
            reply_markup=buttons(self.visit, texts.button_cancel()),
        )

    async def on_event(self, user_id: UserId, event: Event, ctx: Ctx) -> start.Start | None:
        texts = ctx.texts
        if means(said(event), texts.button_cancel()):
            await ctx.send_message(user_id, texts.checkout_cancelled())
            return start.Start(user_display_name(event))
        if ctx.payments is None:
            return start.Start(user_display_name(event))
        await ctx.send_message(
            user_id,
            texts.checkout_pay(total=self._total(ctx)),
            reply_markup=buttons(self.visit, texts.button_cancel()),
        )
        return None

    def timeouts(self, ctx: Ctx) -> Mapping[str, float]:
        return {"expiry": ctx.settings.cart.cart_expires_after.total_seconds()}

    async def on_timeout(
        self, user_id: UserId, name: str, ctx: Ctx
    ) -> Annotated[start.Start, ByTimer("expiry")]:
        await ctx.send_message(user_id, ctx.texts.hungry_expired())
        return start.Start(username="")

    def _described(self) -> str:
        """The cart for the invoice's description (Telegram shows a short one)."""
        text = ", ".join(self._data.order)
        return text if len(text) <= DESCRIPTION_BUDGET else text[: DESCRIPTION_BUDGET - 1] + "…"

    def _total(self, ctx: Ctx) -> str:
        currency = ctx.payments.currency if ctx.payments else ""
        return format_amount(sum(amount for _, amount in self._data.lines), currency)


async def place_paid_order(ctx: Ctx, paid: Paid) -> None:
    """The payment desk calls this once per payment; the key is the same on every attempt.

    A final no from the food API becomes `PaymentRefused`: the desk refunds and tells the
    user. Any other failure (not answered after retries) is reported, never refunded blind.
    """
    try:
        await ctx.food_api.order_food(
            paid.user_id,
            paid.items,
            idempotency_key=paid.idempotency_key,
            payment=paid.order_field(),
        )
    except FoodOrderRefused as exc:
        raise PaymentRefused(str(exc)) from exc
