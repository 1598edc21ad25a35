"""Each update's place in its user's order, for botnodes' line across replicas (line.py).

Telegram numbers updates in the order they happened (`update_id`), across every kind: a
message, a press, a payment. A handler gets a `Message` or a `CallbackQuery`, which does not
carry that number, and botnodes' `Nodes` knows nothing of aiogram; so the dispatcher notes the
update being handled in a context variable and `Nodes(arrival_order=arrival_order)` reads it
when an event asks for its user's turn. A context variable because aiogram runs each update
in its own task (or call, for a webhook), and a variable of that task is exactly "the update
this code is handling"; a timer's task has none, so a timer does not queue in the line.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update

from .middlewares import Handler

_update_id: ContextVar[int | None] = ContextVar("botnodes_update_id", default=None)


def arrival_order() -> int | None:
    """The `update_id` of the update this task is handling, or None outside one."""
    return _update_id.get()


class NoteUpdateId(BaseMiddleware):
    """Notes each update's `update_id` for `arrival_order`, while the update is handled."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        noted = _update_id.set(event.update_id)
        try:
            return await handler(event, data)
        finally:
            _update_id.reset(noted)
