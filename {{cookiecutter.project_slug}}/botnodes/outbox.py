"""Replies held back until the transition that produced them is stored.

A node that places an order and then fails to send "Ordered!" must not leave the user in the
cart, where the next "Finish" orders again. So what a node sends while a transition runs is
queued instead of sent, and sent only once the new state is stored in Redis: a failing reply
can no longer undo (and so repeat) the step before it, and a transition that could not be
stored sends nothing that pretends it was.

Once the step is stored its replies can't be sent again by anyone (a re-delivered update is a
duplicate, a fired timer is gone), so a reply that does not go out is never dropped silently:
a failing one is logged, and so is each one a shutdown cut (the flush was cancelled), naming
the user and what they did not get.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

logger = logging.getLogger("botnodes")

Action = Callable[[], Awaitable[Any]]

_current: ContextVar[Outbox | None] = ContextVar("botnodes_outbox", default=None)
#: Set once a step of the watching caller's context is stored (`watch_stored`).
_stored: ContextVar[asyncio.Event | None] = ContextVar("botnodes_stored", default=None)


@contextmanager
def watch_stored(stored: asyncio.Event) -> Iterator[asyncio.Event]:
    """Have `stored` set when a step run in this context (or a task created in the block,
    which copies it) is stored and its replies start going out.

    A caller with a deadline (a webhook delivery while Redis does not answer) can then tell
    work it may still cut, since nothing is stored and the update comes again, from replies
    it must let go out.
    """
    token = _stored.set(stored)
    try:
        yield stored
    finally:
        _stored.reset(token)


def describe(action: Action) -> str:
    """A name for an action nobody described: its function's."""
    func = getattr(action, "func", action)  # a functools.partial names its function
    return str(getattr(func, "__qualname__", None) or repr(func))


class Outbox:
    """The actions one transition queued, in order, each with what it delivers."""

    def __init__(self) -> None:
        self._actions: list[tuple[Action, str]] = []

    def __len__(self) -> int:
        return len(self._actions)

    def add(self, action: Action, what: str | None = None) -> None:
        self._actions.append((action, what or describe(action)))

    async def flush(self, user_id: object) -> int:
        """Run every queued action in order; return how many failed (each is logged).

        Called once the step is stored (also with nothing queued), which `watch_stored` sees.

        A failure does not stop the rest: the transition is stored, so the user should get
        as much of its conversation as can be delivered.
        """
        stored = _stored.get()
        if stored is not None:
            stored.set()
        actions, self._actions = self._actions, []
        failed = 0
        for index, (action, _) in enumerate(actions):
            try:
                await action()
            except BaseException as error:
                if not isinstance(error, Exception):  # cancelled: shutdown ran out of time
                    lost(user_id, [what for _, what in actions[index:]])
                    raise  # one reply failing must not drop the next ones
                failed += 1
                logger.warning(
                    "a reply of user %s's stored transition could not be sent: %r",
                    user_id,
                    error,
                    extra={"user_id": user_id},
                )
        return failed


def lost(user_id: object, whats: list[str]) -> None:
    """Say which replies of a stored step will never reach the user (one line)."""
    logger.error(
        "user %s lost %d reply(ies) of a stored step, cut by shutdown: %s",
        user_id,
        len(whats),
        "; ".join(whats),
        extra={"user_id": user_id},
    )


@contextmanager
def collecting(outbox: Outbox) -> Iterator[Outbox]:
    """Make `after_commit` queue into `outbox` for the duration of the block."""
    token = _current.set(outbox)
    try:
        yield outbox
    finally:
        _current.reset(token)


async def after_commit(action: Action, what: str | None = None) -> None:
    """Run `action` once the current transition is stored; outside a transition, at once.

    Use it for everything a user should see only if the step really happened (replies), not
    for work whose result the node needs right away. Actions must not raise to signal
    anything: a failure is logged and the next action still runs. `what` names what the user
    would miss if it never ran (default: the action's function), for the log line of a loss.
    """
    outbox = _current.get()
    if outbox is None:
        await action()
    else:
        outbox.add(action, what)
