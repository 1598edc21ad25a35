"""Waits quietly until the user writes again."""

from __future__ import annotations

from pydantic import BaseModel

from botnodes import Node

from ..nodes_types import Ctx, Event, UserId, user_display_name
from . import start


class HoldModel(BaseModel):
    """Nothing to remember while waiting."""


class Hold(Node[Ctx, Event, UserId, HoldModel]):
    """Silent on arrival; any message brings the user back to the main menu."""

    def __init__(self) -> None:
        self._data = HoldModel()

    async def on_enter(self, user_id: UserId, ctx: Ctx) -> None:
        """The user said they are not ready: don't write until they do."""

    async def on_event(self, user_id: UserId, event: Event, ctx: Ctx) -> start.Start:
        return start.Start(user_display_name(event))
