"""A user's turn: the local queue, the Redis lock that makes it hold across processes, and
its life after the step is stored, while the step's replies go out.

One user's events run one at a time, in arrival order. In a process they queue on a local
FIFO lock; between processes they take a Redis lock (a lease) that a dead process holds for
at most `lock_ttl` seconds, because a live holder keeps renewing it, and that goes to the
waiting events in the user's order (line.py).

The lease outlives the commit while the step's replies are sent (the lock value then ends in
`~`), so a user's replies leave in order even when their next update reaches another replica.
Waiting for such a holder does not count against `lock_wait_timeout`: it is alive and
finishing, and the user's next message should wait its turn, not be refused. A waiter in the
same process takes the lease over directly, without a trip to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from redis.exceptions import RedisError

from .errors import LockTimeoutError, StateUnavailableError, UserBusyError
from .keyed_lock import KeyedLock
from .storage import Locked, StateStore

logger = logging.getLogger("botnodes")

K = TypeVar("K", bound=int | str)

_MAX_LOCK_POLL = 0.05  # seconds between two tries of a lock held by another process
_RELEASE_RETRY = 0.2  # seconds between two tries to release a lock while Redis is away
_RELEASE_WHEN_CANCELLED = 0.5  # seconds a cancelled turn gives its release


@dataclass(slots=True)
class Lease:
    """One held turn of a user: the token, what was read under it, how long it waited."""

    user_id: Any
    token: str
    locked: Locked
    lock_wait: float
    #: The commit released the lock, or kept it for the replies (`lock_kept`).
    committed: bool = False
    #: The step is stored and its replies are going out.
    replying: bool = False
    lock_kept: bool = False
    keepalive: asyncio.TimerHandle | asyncio.Future[None] | None = None


class UserLocks(Generic[K]):
    """Takes, keeps alive, hands over and releases users' leases."""

    def __init__(
        self,
        store: StateStore,
        *,
        lock_ttl: float,
        lock_wait_timeout: float,
        max_waiting: int | None,
        unavailable: Callable[[Any, RedisError], StateUnavailableError],
    ) -> None:
        self._store = store
        self._lock_ttl = lock_ttl
        self._lock_wait_timeout = lock_wait_timeout
        self._max_waiting = max_waiting
        self._unavailable = unavailable
        self._local: KeyedLock[K] = KeyedLock()
        self._token_prefix = secrets.token_hex(8)
        self._token_counter = itertools.count()
        #: Users whose holder in this process is sending the replies of a stored step.
        self._replying: set[K] = set()
        #: Users whose first event here is waiting for the Redis lock (bounded by its own
        #: deadline, extended only by a live holder): those queued behind it wait as long.
        self._taking: set[K] = set()
        #: When this process's holder of a user took their lease (cleared at finish).
        self._took_lease: dict[K, float] = {}
        #: Leases a finished holder left for the next local waiter of the same user.
        self._handed_over: dict[K, str] = {}
        #: The orders of users' events queued in this process (see `followers`).
        self._followers: dict[K, list[int]] = {}
        self._background: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """How many users have an event being handled or waiting in this process."""
        return len(self._local)

    @asynccontextmanager
    async def queue(self, user_id: K, order: int | None = None) -> AsyncIterator[float]:
        """Wait for the user's turn in this process; yields when the turn came.

        Refuses with UserBusyError when `max_waiting` events wait already, and with
        LockTimeoutError after `lock_wait_timeout`, not counting time spent behind events
        ahead that make progress (`_ahead_is_alive`). While it waits, the event's `order` is
        among the user's `followers` here, so the user's line in Redis sees it (line.py).
        """
        if self._max_waiting is not None and self._local.waiting(user_id) >= self._max_waiting:
            raise self._busy(user_id)
        if order is not None:
            self._followers.setdefault(user_id, []).append(order)
        try:
            turn_came = await self._local.acquire(
                user_id,
                wait_seconds=self._lock_wait_timeout,
                keep_waiting=lambda: self._ahead_is_alive(user_id),
            )
        finally:
            if order is not None:
                self._stop_following(user_id, order)
        if not turn_came:
            raise self._lock_timeout(user_id)
        # The wait here was behind events of this process that made progress (or it timed
        # out above): the lease's own wait for another process's holder starts now.
        try:
            yield time.perf_counter()
        finally:
            self._local.release(user_id)

    def followers(self, user_id: K) -> list[int]:
        """The orders of the user's events queued in this process behind the one whose turn
        it is: a release or a poll of the Redis lock puts them in the user's line (line.py).
        """
        return list(self._followers.get(user_id, ()))

    def _stop_following(self, user_id: K, order: int) -> None:
        waiting = self._followers[user_id]
        waiting.remove(order)
        if not waiting:
            del self._followers[user_id]

    async def take(
        self, user_id: K, event_id: str, started: float, order: int | None = None
    ) -> Lease:
        """Take the user's Redis lock and read their state in one trip (waiting if held).

        A lease handed over by this process's previous holder is reused: the script sees its
        own token and takes it back without waiting, unless an event with an earlier `order`
        waits in another process (line.py): then that one goes first.
        """
        token = self._handed_over.pop(user_id, None) or self._new_token()
        deadline = started + self._lock_wait_timeout
        delay = 0.002
        self._taking.add(user_id)
        try:
            while True:
                locked = await self._try(user_id, token, event_id, order)
                now = time.perf_counter()
                if locked.taken or locked.duplicate:
                    wait = now - started
                    lease = Lease(user_id=user_id, token=token, locked=locked, lock_wait=wait)
                    if locked.taken:
                        self._took_lease[user_id] = now
                        self._schedule_keepalive(lease, self._lock_ttl / 3)
                    return lease
                if locked.holder_replying:  # alive and finishing: its time is not ours to count
                    deadline = max(deadline, now + self._lock_wait_timeout)
                if now >= deadline:
                    raise self._lock_timeout(user_id)
                await asyncio.sleep(min(delay, deadline - now, max(locked.lock_left_ms, 1) / 1000))
                delay = min(delay * 2, _MAX_LOCK_POLL)
        finally:
            self._taking.discard(user_id)

    def _ahead_is_alive(self, user_id: K) -> bool:
        """Whether the event ahead in this process is making progress, so those queued behind
        it keep waiting: it sends a stored step's replies, or waits for the Redis lock (within
        its own deadline, which only a live holder sending replies extends), or runs its step
        (for up to `lock_wait_timeout`, as a waiter would).
        """
        if user_id in self._replying or user_id in self._taking:
            return True
        took = self._took_lease.get(user_id)
        return took is not None and time.perf_counter() - took < self._lock_wait_timeout

    def replying(self, lease: Lease, *, lock_kept: bool) -> None:
        """The step is stored and its replies go out; a kept lock is kept alive meanwhile."""
        lease.replying = True
        lease.lock_kept = lock_kept
        self._replying.add(lease.user_id)
        if lock_kept:
            self._schedule_keepalive(lease, self._lock_ttl / 3)

    async def finish(self, lease: Lease) -> None:
        """End the turn: release the lock, or leave it to this user's next local event."""
        self.stop_keepalive(lease)
        self._took_lease.pop(lease.user_id, None)
        if lease.replying:
            self._replying.discard(lease.user_id)
        if lease.replying and lease.lock_kept:
            if self._local.waiting(lease.user_id):
                self._handed_over[lease.user_id] = lease.token
                return
        elif lease.committed or lease.locked.duplicate:
            return
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # Cancelled (a shutdown past its deadline): one quick try, never a wait on a Redis
            # that does not answer; if it fails the lock expires after `lock_ttl` by itself.
            with contextlib.suppress(TimeoutError, RedisError):
                async with asyncio.timeout(_RELEASE_WHEN_CANCELLED):
                    await self._unlock(lease)
            return
        await self.release(lease)

    async def release(self, lease: Lease) -> None:
        """Hand the lock back; while Redis is away, keep trying in the background.

        A lock that comes back with Redis (an append-only file restores it) would otherwise
        keep its user waiting for the rest of `lock_ttl`; this process is still alive and can
        say at once that it is done with it.
        """
        try:
            await self._unlock(lease)
        except RedisError as error:
            logger.warning(
                "could not release the lock of user %s (%s); retrying until it expires",
                lease.user_id,
                error,
                extra={"user_id": lease.user_id},
            )
            self._in_background(self._release_later(lease))

    async def _release_later(self, lease: Lease) -> None:
        give_up = time.perf_counter() + self._lock_ttl
        while time.perf_counter() < give_up:
            await asyncio.sleep(_RELEASE_RETRY)
            try:
                await self._unlock(lease)
            except RedisError:
                continue
            return

    async def _unlock(self, lease: Lease) -> None:
        """Release the lock, handing it on to the earliest event waiting (line.py)."""
        await self._store.write_and_unlock(
            lease.user_id,
            lease.token,
            None,
            read_digest="",
            followers=self.followers(lease.user_id),
        )

    def _new_token(self) -> str:
        return f"{self._token_prefix}:{next(self._token_counter)}"

    async def _try(self, user_id: K, token: str, event_id: str, order: int | None) -> Locked:
        """One try at the lock; a caller cancelled meanwhile still gets a taken lock released.

        The script runs in Redis whether or not its caller is still waiting, so the call is
        shielded and, if the caller is gone, a lock it took is handed back right away instead
        of blocking the user for `lock_ttl`.
        """

        def orphaned() -> None:
            lease = Lease(user_id=user_id, token=token, locked=Locked(taken=True), lock_wait=0.0)
            self._in_background(self.release(lease))

        try:
            return await self._store.try_lock_and_read(
                user_id,
                token,
                event_id=event_id,
                order=order,
                followers=self.followers(user_id),
                on_orphaned=orphaned,
            )
        except RedisError as error:
            raise self._unavailable(user_id, error) from error

    def _in_background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _schedule_keepalive(self, lease: Lease, period: float) -> None:
        self.stop_keepalive(lease)
        lease.keepalive = asyncio.get_running_loop().call_later(
            period, self._start_keepalive, lease, period
        )

    def _start_keepalive(self, lease: Lease, period: float) -> None:
        """The handler (or its replies) runs long: keep the lock alive until it is done."""
        lease.keepalive = asyncio.ensure_future(self._keep_alive(lease, period))

    async def _keep_alive(self, lease: Lease, period: float) -> None:
        while True:
            try:
                if not await self._store.extend_lock(lease.user_id, lease.token):
                    logger.warning(
                        "lock of user %s was lost while their event was handled",
                        lease.user_id,
                        extra={"user_id": lease.user_id},
                    )
                    return
            except RedisError as error:  # try again next period; the write is fenced anyway
                logger.warning(
                    "could not extend the lock of user %s: %s",
                    lease.user_id,
                    error,
                    extra={"user_id": lease.user_id},
                )
            await asyncio.sleep(period)

    @staticmethod
    def stop_keepalive(lease: Lease) -> None:
        if lease.keepalive is not None:
            lease.keepalive.cancel()
            lease.keepalive = None

    def _busy(self, user_id: K) -> UserBusyError:
        logger.warning(
            "user %s has %s events waiting already; this one is not processed",
            user_id,
            self._max_waiting,
            extra={"user_id": user_id},
        )
        return UserBusyError(f"user {user_id} has {self._max_waiting} events waiting already")

    def _lock_timeout(self, user_id: K) -> LockTimeoutError:
        logger.warning(
            "user %s: lock not acquired within %.1fs, event not processed",
            user_id,
            self._lock_wait_timeout,
            extra={"user_id": user_id},
        )
        return LockTimeoutError(
            f"the lock of user {user_id} was not free within {self._lock_wait_timeout}s"
        )
