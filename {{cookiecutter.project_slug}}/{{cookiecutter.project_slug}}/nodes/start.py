"""The main menu: asks whether the user is hungry."""

from __future__ import annotations

from pydantic import BaseModel

from botnodes import Node

from ..nodes_types import Ctx, Event, UserId, buttons, means, said, user_display_name
from . import hold, hungry


class StartModel(BaseModel):
    """Nothing to remember on the main menu; an empty model keeps the stored blob tiny."""


class Start(Node[Ctx, Event, UserId, StartModel]):
    """Greets the user and sends them to `Hungry` or `Hold`."""

    # Only needed by `on_enter`, right after construction, so they live outside the model
    # and are not stored: a node read back from Redis is rebuilt without `__init__`.
    _username: str
    _is_first_launch: bool

    def __init__(self, username: str, is_first_launch: bool = False) -> None:
        self._data = StartModel()
        self._username = username
        self._is_first_launch = is_first_launch

    async def on_enter(self, user_id: UserId, ctx: Ctx) -> None:
        # The buttons carry this visit: once the user moves on, they are out of date.
        texts = ctx.texts
        yes_no = buttons(self.visit, texts.button_yes(), texts.button_no())
        if self._is_first_launch:
            text = texts.start_greeting_first(username=self._username)
        else:
            text = texts.start_greeting_again()
        await ctx.send_message(user_id, text, reply_markup=yes_no)

    async def on_event(
        self, user_id: UserId, event: Event, ctx: Ctx
    ) -> hungry.Hungry | hold.Hold | Start:
        answer = said(event)
        if means(answer, ctx.texts.button_yes()):
            await ctx.send_message(user_id, ctx.texts.start_yes())
            return hungry.Hungry()
        if means(answer, ctx.texts.button_no()):
            await ctx.send_message(user_id, ctx.texts.start_no())
            return hold.Hold()
        await ctx.send_message(user_id, ctx.texts.start_unknown())
        return Start(user_display_name(event))
