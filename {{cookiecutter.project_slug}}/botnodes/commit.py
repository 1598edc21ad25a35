"""The commit step: the node a step produced, stored under the user's lease.

This is the one write of a step, so it is where a step can be lost: it retries while Redis is
away (the write is fenced by the lease token and the digest of what was read, so repeating it
is safe), refuses a node too big to store, and says loudly when the step did not happen.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable
from typing import Any, Generic

from redis.exceptions import RedisError

from .budget import ReplyBudget
from .codec import Decoded, NodeCodec
from .errors import StateTooLargeError, TransitionLostError
from .lease import Lease, UserLocks
from .node import CtxT, EventT, UserIdT
from .observer import Notify
from .redis_watch import saving
from .settings import NodesSettings
from .step import AnyNode
from .storage import REFUSED, STORED_WITHOUT_LOCK, StateStore, Written
from .timers import PendingTimers, TimerSchedule, changes, placement

logger = logging.getLogger("botnodes")

_MAX_COMMIT_BACKOFF = 1.0  # seconds between two tries of a commit Redis did not take


class Commit(Generic[CtxT, EventT, UserIdT]):
    """Stores a step's node and its timers, and hands the lease on to the replies."""

    def __init__(
        self,
        *,
        codec: NodeCodec[CtxT, EventT, UserIdT],
        store: StateStore,
        timers: TimerSchedule,
        locks: UserLocks[UserIdT],
        settings: NodesSettings,
        notify: Notify,
        budget: ReplyBudget | None = None,
    ) -> None:
        self._codec = codec
        self._budget = budget
        self._store = store
        self._timers = timers
        self._locks = locks
        self._settings = settings
        self._notify = notify

    async def __call__(
        self,
        lease: Lease,
        node: AnyNode[CtxT, EventT, UserIdT],
        event_id: str,
        *,
        timers: PendingTimers,
        replies: int,
        before: Decoded[CtxT, EventT, UserIdT] | None,
        fired: str | None = None,
        exact: bool = False,
    ) -> str:
        """Store the node, retrying while Redis is away; its registered key.

        The node is stored with its pending `timers`, and, if one is due earlier than the
        timer schedule holds for the user, their place in it is set by the same script (on a
        cluster: in the same batch). Otherwise nothing is sent for the schedule (timers.py,
        `placement`); `exact` (a step of the timer loop, whose claim moved the user's score)
        sets it to the truth whatever it held. With replies to send, the lock is kept (and
        kept alive) until they are out.
        Raises TransitionLostError if it can't be stored within `commit_timeout`, or if
        another writer changed the user's state since it was read; StateTooLargeError if
        the node's data is over `state_max_bytes`.
        """
        key = self._codec.key_of(node)
        timers, reschedule = placement(timers, before.timers if before else None, exact=exact)
        value = self._codec.encode(node, timers)
        self._check_size(lease.user_id, key, value)
        self._locks.stop_keepalive(lease)
        keep_lock = replies > 0 and self._settings.lock_during_replies
        written = await self._write(
            lease, key, value, event_id, keep_lock=keep_lock, timers=timers, reschedule=reschedule
        )
        lease.committed = True
        result = written.status
        if result == REFUSED:
            logger.error(
                "state of user %s changed since it was read (another writer); node %r is "
                "not stored and this transition is dropped",
                lease.user_id,
                key,
                extra={"user_id": lease.user_id, "node": key},
            )
            raise TransitionLostError(
                f"node {key!r} of user {lease.user_id} was not stored: another writer changed "
                "the state first"
            )
        if result == STORED_WITHOUT_LOCK:
            logger.warning(
                "lock of user %s expired before node %r was stored; stored anyway, since "
                "nobody changed the state meanwhile (raise lock_ttl if handlers run this long)",
                lease.user_id,
                key,
                extra={"user_id": lease.user_id, "node": key},
            )
        if self._budget is not None and written.waits_ms:
            self._budget.reserved(lease.user_id, written.waits_ms)
        if replies:
            self._locks.replying(lease, lock_kept=self._settings.lock_during_replies)
        self._count_timers(before, key, timers, fired)
        return key

    async def _write(
        self,
        lease: Lease,
        key: str,
        value: str,
        event_id: str,
        *,
        keep_lock: bool,
        timers: PendingTimers,
        reschedule: bool,
    ) -> Written:
        """The write (and schedule) in one batch, tried until `commit_timeout` runs out.

        The replies' turns are reserved by the write itself (budget.py): asked for once, so a
        retried write reserves the same count again instead of asking the budget twice.
        """
        saving()  # from here on the step may be stored: a deadline on Redis no longer cuts it
        deadline = time.perf_counter() + self._settings.commit_deadline
        delay = 0.05
        reserve = self._budget.reservation(lease.user_id) if self._budget is not None else None
        # On one Redis the commit script sets the schedule itself: one command, not a script.
        schedule = (
            self._timers.placement(lease.user_id, timers.earliest)
            if reschedule and self._store.schedules_in_commit
            else None
        )
        while True:
            try:
                writes: list[Awaitable[Any]] = [
                    self._store.write_and_unlock(
                        lease.user_id,
                        lease.token,
                        value,
                        read_digest=lease.locked.read_digest,
                        forget_legacy=lease.locked.from_legacy,
                        event_id=event_id,
                        keep_lock_ms=self._settings.lock_ttl_ms if keep_lock else 0,
                        reserve=reserve,
                        schedule=schedule,
                        followers=self._locks.followers(lease.user_id),
                    )
                ]
                if reschedule and schedule is None:
                    # Sent first, in the commit's batch: a crash between the two leaves the
                    # schedule early (a harmless look), never late.
                    writes.insert(0, self._timers.set(lease.user_id, timers.earliest))
                written: Written = (await asyncio.gather(*writes))[-1]
                return written
            except RedisError as error:
                self._notify(self._notify.observer.redis_error)
                left = deadline - time.perf_counter()
                if left <= 0:
                    logger.error(
                        "could not store node %r of user %s: %s; the transition is lost",
                        key,
                        lease.user_id,
                        error,
                        extra={"user_id": lease.user_id, "node": key},
                    )
                    raise TransitionLostError(
                        f"node {key!r} of user {lease.user_id} was not stored: {error}"
                    ) from error
                logger.warning(
                    "storing node %r of user %s failed (%s); retrying",
                    key,
                    lease.user_id,
                    error,
                    extra={"user_id": lease.user_id, "node": key},
                )
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, _MAX_COMMIT_BACKOFF)

    def _check_size(self, user_id: UserIdT, key: str, value: str) -> None:
        """Refuse to store more than `state_max_bytes`: no node can grow a key without bound."""
        limit = self._settings.state_max_bytes
        if limit is None or len(value) <= limit // 4:
            return  # a character is at most 4 bytes in UTF-8: no need to encode
        size = len(value.encode())
        if size <= limit:
            return
        logger.error(
            "node %r of user %s is %d bytes, over state_max_bytes=%d; not stored, the user "
            "stays where they were",
            key,
            user_id,
            size,
            limit,
            extra={"user_id": user_id, "node": key},
        )
        raise StateTooLargeError(
            f"node {key!r} of user {user_id} is {size} bytes, over the limit of "
            f"{limit} (state_max_bytes): not stored",
            size=size,
            limit=limit,
        )

    def _count_timers(
        self,
        before: Decoded[CtxT, EventT, UserIdT] | None,
        key: str,
        timers: PendingTimers | None,
        fired: str | None,
    ) -> None:
        scheduled, cancelled = changes(before.timers if before else None, timers)
        from_key = before.key if before else key
        observer = self._notify.observer
        for name in scheduled:
            self._notify(functools.partial(observer.timer_scheduled, key, name))
        for name in cancelled:
            if name != fired:
                self._notify(functools.partial(observer.timer_cancelled, from_key, name))
