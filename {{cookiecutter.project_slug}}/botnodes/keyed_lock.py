"""A FIFO lock per key that forgets keys nobody is using."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class KeyedLock(Generic[K]):
    """Serializes work per key inside one process, in arrival order.

    Events of one user queue here instead of polling Redis for the cross-process lock,
    so a burst drains as fast as the handlers run. A slot exists only while someone holds
    or waits for it, so memory follows the number of busy users, not of users ever seen.
    """

    def __init__(self) -> None:
        self._slots: dict[K, _Slot] = {}

    def __len__(self) -> int:
        """Number of keys currently held or waited for."""
        return len(self._slots)

    def waiting(self, key: K) -> int:
        """How many acquirers of `key` wait behind its holder right now."""
        slot = self._slots.get(key)
        return max(slot.users - 1, 0) if slot is not None else 0

    async def acquire(
        self,
        key: K,
        *,
        wait_seconds: float,
        keep_waiting: Callable[[], bool] | None = None,
    ) -> bool:
        """Take the key's lock; return False if it isn't free within `wait_seconds`.

        When `wait_seconds` pass and `keep_waiting()` is true (the holder is busy with
        something that ends by itself), the wait starts over, keeping its place in the queue.
        """
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        slot.users += 1
        if slot.users == 1:  # nobody holds or waits: acquiring cannot block, skip the timer
            await slot.lock.acquire()
            return True
        turn = asyncio.ensure_future(slot.lock.acquire())
        try:
            while True:
                done, _ = await asyncio.wait({turn}, timeout=wait_seconds)
                if done or keep_waiting is None or not keep_waiting():
                    break
        except BaseException:  # cancelled: give up our place (or the lock, if it came)
            self._give_up(key, slot, turn)
            raise
        if turn.done():
            return True
        self._give_up(key, slot, turn)
        return False

    def _give_up(self, key: K, slot: _Slot, turn: asyncio.Future[Literal[True]]) -> None:
        if turn.done() and not turn.cancelled():
            slot.lock.release()  # it came just now: pass it on
        else:
            turn.cancel()
        self._leave(key, slot)

    def release(self, key: K) -> None:
        """Release a lock taken with `acquire`, waking the next waiter for the key."""
        slot = self._slots[key]
        slot.lock.release()
        self._leave(key, slot)

    def _leave(self, key: K, slot: _Slot) -> None:
        slot.users -= 1
        if slot.users == 0:
            del self._slots[key]
