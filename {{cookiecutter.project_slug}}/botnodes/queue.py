"""The first two steps of every route: wait in the user's queue, then hold their lease.

Kept apart from the step itself because every way of changing a user (an event, a timer,
`NodesUser.to`, `forget`) must take the same turn, and shutdown must see all of them: the
count of turns in flight lives here, next to the only place that starts one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic

from .lease import K, Lease, UserLocks


class Turns(Generic[K]):
    """Hands out users' turns (local queue, then Redis lease) and the concurrency slots."""

    def __init__(
        self,
        locks: UserLocks[K],
        *,
        max_concurrent: int | None,
        arrival_order: Callable[[], int | None] | None = None,
    ) -> None:
        self._locks = locks
        self._arrival_order = arrival_order
        self._slots = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @asynccontextmanager
    async def turn(self, user_id: K, event_id: str) -> AsyncIterator[Lease]:
        """The user's turn: queued in this process, then their Redis lock and state.

        Leaving it releases the lock unless the commit did, or hands it to the user's next
        event waiting in this process.
        """
        # Read as the turn is asked for: it is the event being handled now (a context
        # variable of the runtime's update), not whatever runs when the turn comes.
        order = self._arrival_order() if self._arrival_order is not None else None
        self._in_flight += 1
        self._idle.clear()
        try:
            queued = time.perf_counter()
            async with self._locks.queue(user_id, order) as turn_came:
                lease = await self._locks.take(user_id, event_id, turn_came, order)
                lease.lock_wait += turn_came - queued  # what was waited in all, as reported
                try:
                    yield lease
                finally:
                    await self._locks.finish(lease)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    def slot(self) -> AbstractAsyncContextManager[Any]:
        """One of `max_concurrent` slots, taken only by an event whose user's turn it is.

        Taken after the lease, so one user's backlog waits in their own queue instead of
        holding slots every other user needs.
        """
        return self._slots if self._slots is not None else contextlib.nullcontext()

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - returns False, never raises
        """Wait until no turn is running; False if some still run after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
