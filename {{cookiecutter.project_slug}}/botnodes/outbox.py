"""Replies held back until the transition that produced them is stored.

A node that places an order and then fails to send "Ordered!" must not leave the user in the
cart, where the next "Finish" orders again. So what a node sends while a transition runs is
queued instead of sent, and sent only once the new state is stored in Redis: a failing reply
can no longer undo (and so repeat) the step before it, and a transition that could not be
stored sends nothing that pretends it was.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

logger = logging.getLogger("botnodes")

Action = Callable[[], Awaitable[Any]]

_current: ContextVar[Outbox | None] = ContextVar("botnodes_outbox", default=None)


class Outbox:
    """The actions one transition queued, in order."""

    def __init__(self) -> None:
        self._actions: list[Action] = []

    def __len__(self) -> int:
        return len(self._actions)

    def add(self, action: Action) -> None:
        self._actions.append(action)

    async def flush(self, user_id: object) -> int:
        """Run every queued action in order; return how many failed (each is logged).

        A failure does not stop the rest: the transition is stored, so the user should get
        as much of its conversation as can be delivered.
        """
        actions, self._actions = self._actions, []
        failed = 0
        for action in actions:
            try:
                await action()
            except Exception as error:  # one reply failing must not drop the next ones
                failed += 1
                logger.warning(
                    "a reply of user %s's stored transition could not be sent: %r",
                    user_id,
                    error,
                    extra={"user_id": user_id},
                )
        return failed


@contextmanager
def collecting(outbox: Outbox) -> Iterator[Outbox]:
    """Make `after_commit` queue into `outbox` for the duration of the block."""
    token = _current.set(outbox)
    try:
        yield outbox
    finally:
        _current.reset(token)


async def after_commit(action: Action) -> None:
    """Run `action` once the current transition is stored; outside a transition, at once.

    Use it for everything a user should see only if the step really happened (replies), not
    for work whose result the node needs right away. Actions must not raise to signal
    anything: a failure is logged and the next action still runs.
    """
    outbox = _current.get()
    if outbox is None:
        await action()
    else:
        outbox.add(action)
