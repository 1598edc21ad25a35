"""The main menu: asks whether the user is hungry."""

from __future__ import annotations

from pydantic import BaseModel

from botnodes import Node

from ..nodes_types import Ctx, Event, NextNode, UserId, user_display_name
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

    @classmethod
    def _get_model(cls) -> type[StartModel]:
        return StartModel

    async def on_enter(self, user_id: UserId, ctx: Ctx) -> None:
        if self._is_first_launch:
            await ctx.send_message(user_id, f"Hello, {self._username}! Are you hungry?")
        else:
            await ctx.send_message(user_id, "Again main menu! Are you hungry?")

    async def on_event(self, user_id: UserId, event: Event, ctx: Ctx) -> NextNode:
        if event.text == "Yes":
            await ctx.send_message(user_id, "No worries, I've got you back!")
            return hungry.Hungry()
        if event.text == "No":
            await ctx.send_message(user_id, "Write me when you are ready then!")
            return hold.Hold()
        await ctx.send_message(user_id, "Say what?")
        return Start(user_display_name(event))
