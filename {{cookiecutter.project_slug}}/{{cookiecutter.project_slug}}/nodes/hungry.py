"""Collects the order item by item and places it through the food API."""

from __future__ import annotations

from pydantic import BaseModel, Field

from botnodes import Node

from ..buttons import keyboard
from ..food_api import FoodOrderError
from ..nodes_types import Ctx, Event, UserId, said, user_display_name
from . import start


class HungryModel(BaseModel):
    """The cart is stored so it survives restarts while the user keeps choosing."""

    order: list[str] = Field(default_factory=list)


class Hungry(Node[Ctx, Event, UserId, HungryModel]):
    """Every message adds an item; `Finish` orders, `Cancel` drops the cart."""

    def __init__(self, order: list[str] | None = None) -> None:
        self._data = HungryModel(order=order or [])

    @classmethod
    def _get_model(cls) -> type[HungryModel]:
        return HungryModel

    async def on_enter(self, user_id: UserId, ctx: Ctx) -> None:
        cart = ", ".join(self._data.order) if self._data.order else "Empty"
        await ctx.send_message(
            user_id,
            f"What are you gonna order? Cart: {cart}",
            reply_markup=keyboard(self.visit, "Finish", "Cancel"),
        )

    async def on_event(self, user_id: UserId, event: Event, ctx: Ctx) -> start.Start | Hungry:
        text = said(event) or ""
        if text == "Finish":
            if not self._data.order:
                await ctx.send_message(user_id, "Cart is empty! Write Cancel to cancel the order")
                return Hungry([])
            await self._place_order(user_id, ctx)
            return start.Start(user_display_name(event))
        if text == "Cancel":
            await ctx.send_message(user_id, "Order cancelled!")
            return start.Start(user_display_name(event))
        await ctx.send_message(user_id, f"Added {text}")
        return Hungry(order=[*self._data.order, text])

    async def _place_order(self, user_id: UserId, ctx: Ctx) -> None:
        # A failed order is reported to the user and the menu goes on; it is not retried,
        # because the food API may have taken the order before the failure reached us.
        # The replies go out only once the user is stored on the main menu, so a reply that
        # fails can't leave them in the cart to order again. The key is the same if this very
        # step runs again (the process died before storing it), and new for any other cart.
        await ctx.send_message(user_id, f"Ordering {', '.join(self._data.order)}")
        try:
            await ctx.food_api.order_food(
                user_id, self._data.order, idempotency_key=f"{user_id}:{self.visit}"
            )
        except FoodOrderError as exc:
            ctx.logger.error(
                "Order for user %s failed: %s | items=%s", user_id, exc, self._data.order
            )
            await ctx.send_message(user_id, "Error")
        else:
            await ctx.send_message(user_id, "Ordered!")
