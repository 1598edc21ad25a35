"""Nothing hangs while Redis does: a deadline on work that waits for Redis, and a PING probe.

A step that waits on Redis may be slow for a good reason (its user's turn comes after long
paced replies) or because Redis stopped answering (frozen, a full disk, a partition that
leaves sockets open). Only the second is a reason to give up, and giving up is only safe
before the step was sent to be stored: after that, Redis may store it when it wakes up.
`stored_or_cut` tells the two apart: past its deadline it asks Redis for a PING (with a short
timeout of its own); while Redis answers it keeps waiting, when it does not, the work is
cancelled. The caller then hands the work back to be done again (a webhook answers 503, a
timer gives its claim back), with nothing of it stored. A webhook delivery whose write was
already sent is answered 503 all the same but left to finish: if Redis stores it on waking,
the step's replies go out and the re-delivery is skipped as handled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

#: Seconds Redis gets to answer the probe's PING.
PROBE_TIMEOUT = 2.0
#: Seconds cut work gets to unwind after it was cancelled.
CANCEL_GRACE = 0.5

#: Set once a step of the watching caller's context sends its write (`watch_saving`).
_saving: ContextVar[asyncio.Event | None] = ContextVar("botnodes_saving", default=None)


class RedisProbe:
    """Does Redis answer PING within `timeout`? One PING at a time, shared by everyone asking
    meanwhile: a frozen Redis is asked once, not once per waiting step."""

    def __init__(self, ping: Callable[[], Awaitable[Any]], timeout: float = PROBE_TIMEOUT) -> None:
        self._ping_redis = ping
        self._timeout = timeout
        self._ping: asyncio.Task[bool] | None = None

    async def answers(self) -> bool:
        if self._ping is None or self._ping.done():
            self._ping = asyncio.create_task(self._answers())
        return await asyncio.shield(self._ping)

    async def _answers(self) -> bool:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                return bool(await self._ping_redis())
        return False


@contextmanager
def watch_saving(saving: asyncio.Event) -> Iterator[asyncio.Event]:
    """Have `saving` set when a step run in this context (or a task created in the block)
    sends its write to Redis: from then on it may be stored, so it must not be cut."""
    token = _saving.set(saving)
    try:
        yield saving
    finally:
        _saving.reset(token)


def saving() -> None:
    """Say that this context's step is sending its write (commit.py calls it)."""
    event = _saving.get()
    if event is not None:
        event.set()


async def stored_or_cut(
    work: asyncio.Future[Any],
    stored: asyncio.Event | None,
    *,
    deadline: float,
    probe: RedisProbe,
    grace: float = CANCEL_GRACE,
    sent: asyncio.Event | None = None,
) -> bool:
    """Wait for `work`; True once it is done or `stored` is set (await `work` then), False
    if it was given up: `deadline` seconds passed without either while Redis did not answer
    a PING. Given up, `work` is cancelled, unless `sent` is set (its step's write went out:
    Redis may store it on waking, and then its replies must still go out), in which case it
    is left running and ends on its own (stored and replied, or failed on Redis's timeouts).

    Cancelled itself (a shutdown), it cancels `work` too and waits no longer.
    """
    try:
        while not await _done_or_stored(work, stored, deadline):
            if await probe.answers() or (stored is not None and stored.is_set()):
                continue  # Redis is fine (the work simply takes long), or it stored meanwhile
            if sent is not None and sent.is_set():
                return False
            work.cancel()
            await asyncio.wait([work], timeout=grace)
            return False
    except asyncio.CancelledError:
        work.cancel()
        raise
    return True


async def _done_or_stored(
    work: asyncio.Future[Any], stored: asyncio.Event | None, deadline: float
) -> bool:
    """Wait up to `deadline` s; True once `work` is done or `stored` set."""
    waiting = asyncio.ensure_future(stored.wait()) if stored is not None else None
    try:
        await asyncio.wait(
            [work] if waiting is None else [work, waiting],
            timeout=deadline,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        if waiting is not None:
            waiting.cancel()
    return work.done() or (stored is not None and stored.is_set())
