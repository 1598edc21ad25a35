"""`TimerLoop`: one process's poller of the timer schedule (timers.py), and its patience with
Redis.

It claims the users whose timers are due and fires each one in a task of its own. Nothing of
it hangs while Redis does: a claim or a firing that waits on Redis past `redis_deadline` while
Redis does not answer a PING is cut (redis_watch.py), and so is one that failed on Redis. Its
claim is given back (`TimerSchedule.give_back`) as soon as Redis answers again, so the timer
fires then, here or in another replica, instead of after `claim_ttl`: never lost, and never
twice, since a firing checks under its user's lock that the timer is still pending. A firing
whose step was already sent to be stored is not cut: Redis may store it when it wakes up, and
its replies go out once it answers. The outage is logged once, not once per timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from .errors import (
    LockTimeoutError,
    StateTooLargeError,
    StateUnavailableError,
    TransitionLostError,
    UserBusyError,
)
from .redis_watch import RedisProbe, stored_or_cut, watch_saving
from .settings import NodesSettings
from .timers import GivenBack, TimerSchedule

logger = logging.getLogger("botnodes")

#: The most users one poll claims per shard; a poll that claimed this many looks again at once.
CLAIM_BATCH = 100
#: The most firings one process runs at once: past it the loop claims nothing more until some
#: end, so 100,000 due timers don't become 100,000 tasks (a firing waits only on its own user,
#: so only this many chats hung at once could hold up the next look).
MAX_FIRINGS = 10 * CLAIM_BATCH
#: What a firing that Redis let down raises (the user's lock or state, or its commit, or no
#: answer in time)...
REDIS_TROUBLE = (RedisError, StateUnavailableError, TransitionLostError, TimeoutError)
#: ...and what it raises when Redis is fine: its claim expires (`claim_ttl`) as any failure's.
NOT_REDIS = (LockTimeoutError, UserBusyError, StateTooLargeError)


class TimerLoop:
    """One process's poller: claims the users whose timers are due and fires each one.

    `fire` runs a claimed user's timer as a step of theirs (`Nodes` passes its own); a failure
    is logged and leaves the claim to expire, so the timer fires again `timer_claim_ttl` later;
    a failure on Redis gives the claim back once Redis answers (see the module).

    The loop never waits for a firing: each runs in a task of its own and waits only on its own
    user (their queue, lock and replies), exactly as a message does. A chat in flood control
    or a `sendMessage` that hangs holds up that user's timer, never the next look for
    everybody else's. Stopping the loop stops the claiming only; the firings it started go on
    until `wait_firings` (shutdown) lets them finish or gives up on them.
    """

    def __init__(
        self,
        schedule: TimerSchedule,
        fire: Callable[[Any], Awaitable[object]],
        *,
        settings: NodesSettings,
        now_ms: Callable[[], int],
        on_redis_error: Callable[[], None],
        ping: Callable[[], Awaitable[object]],
    ) -> None:
        self._schedule = schedule
        self._fire = fire
        self._claim_ttl_ms = settings.timer_claim_ttl_ms
        self._poll_interval = settings.timer_poll_interval
        self._now_ms = now_ms
        self._on_redis_error = on_redis_error
        #: Asked whether Redis answers once a claim or firing waited `redis_deadline` on it.
        self._probe = RedisProbe(ping)
        self._redis_deadline = settings.redis_deadline
        self._firings: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._room.set()
        #: Claims to hand back once Redis answers again.
        self._owed: list[GivenBack] = []
        #: Redis let a look or a firing down, and has not answered since (logged once).
        self._down = False

    @property
    def poll_interval(self) -> float:
        """Seconds between two looks when the last one found less than a full batch."""
        return self._poll_interval

    @property
    def firings(self) -> int:
        """How many claimed timers are being fired now (started by `run`)."""
        return len(self._firings)

    async def fire_due(self, now_ms: int | None = None) -> int:
        """Fire what is due by `now_ms` and this process claims; how many users it claimed.

        Waits until every claimed timer ran: for a test that moves its own clock. `run` does
        not wait (see `look`).
        """
        now_ms = self._now_ms() if now_ms is None else now_ms
        claimed = await self._claim(now_ms)
        await asyncio.gather(*(self._fire_logged(user_id, due) for user_id, due in claimed))
        return len(claimed)

    async def look(self) -> int:
        """Claim what is due now and start firing each user in a task; how many were claimed.

        Returns once the claim is in, not when the firings end: one user's slow chat can't
        delay the look for the others' timers.
        """
        await self._room.wait()
        claimed = await self._claim(self._now_ms())
        for user_id, due in claimed:
            # A user still being fired gets a second firing queued behind the first, as a
            # second message would be: under the lock it finds what is still due, if anything.
            task = asyncio.create_task(self._fire_logged(user_id, due), name=f"timer of {user_id}")
            self._firings.add(task)
            task.add_done_callback(self._fired)
        if len(self._firings) >= MAX_FIRINGS:
            self._room.clear()
        return len(claimed)

    async def _claim(self, now_ms: int) -> list[tuple[Any, GivenBack]]:
        """Claim the users due by `now_ms`: each with how to give their claim back.

        A claim cut or failed on Redis may still run once Redis wakes up: all it could have
        taken (the users scored `now_ms + claim_ttl`) is owed back.
        """
        claimed_until = now_ms + self._claim_ttl_ms
        claim = asyncio.ensure_future(self._schedule.claim(now_ms, self._claim_ttl_ms, CLAIM_BATCH))
        try:
            done = await stored_or_cut(
                claim, None, deadline=self._redis_deadline, probe=self._probe
            )
            if not done:
                raise TimeoutError(f"Redis did not answer for {self._redis_deadline:g}s")
            users = claim.result()
        except (RedisError, TimeoutError):
            self._owed.extend(
                GivenBack(self._schedule.shard_key(shard), claimed_until, now_ms)
                for shard in range(self._schedule.shards)
            )
            raise
        claims = []
        for user, due in users:
            member = self._schedule.member(user)
            shard = self._schedule.key_of(member)
            claims.append((user, GivenBack(shard, claimed_until, due, (member,))))
        return claims

    def _fired(self, task: asyncio.Task[None]) -> None:
        self._firings.discard(task)
        if len(self._firings) < MAX_FIRINGS:
            self._room.set()

    async def wait_firings(self, timeout: float) -> bool:  # noqa: ASYNC109 - never raises
        """Wait for the firings `run` started; False if some still run after `timeout` s.

        Shutdown calls it after stopping the loop: a firing whose step is stored delivers its
        replies meanwhile. Those still running are left to the caller, who cancels them: one
        cut before its commit fires again after its claim expires (in the next process); one
        cut after it logs the replies it could not send (see outbox.py).
        """
        if not self._firings:
            return True
        _, pending = await asyncio.wait(set(self._firings), timeout=timeout)
        return not pending

    async def cancel_firings(self) -> None:
        """Cut the firings still running (shutdown past its deadline) and let them unwind."""
        tasks = set(self._firings)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def run(self) -> None:
        """Look every `poll_interval` (at once again after a full batch) until cancelled.

        Cancelling it stops the claiming at once; a claim cut in flight fires after its TTL.
        While Redis does not answer it only waits for it to, then gives the claims back.
        """
        while True:
            try:
                if self._down or self._owed:
                    await self._recover()
                busy = await self.look() >= CLAIM_BATCH
            except (RedisError, TimeoutError) as error:
                self._on_redis_error()
                self._redis_down(f"could not look for due timers: {error}")
                busy = False
            except Exception:  # the loop must outlive anything one look runs into
                logger.exception("looking for due timers failed; trying again")
                busy = False
            if not busy:
                await asyncio.sleep(self._poll_interval)

    async def _recover(self) -> None:
        """Wait until Redis answers a PING, then give back what is owed."""
        while not await self._probe.answers():  # noqa: ASYNC110 - Redis sends no event
            await asyncio.sleep(self._poll_interval)
        owed, self._owed = self._owed, []
        give_back = asyncio.ensure_future(self._schedule.give_back(owed))
        try:
            if not await stored_or_cut(
                give_back, None, deadline=self._redis_deadline, probe=self._probe
            ):
                raise TimeoutError(f"Redis did not answer for {self._redis_deadline:g}s")
            given = give_back.result()
        except BaseException:
            self._owed[:0] = owed
            raise
        if self._down:
            self._down = False
            logger.warning("Redis answers again: %d due timer(s) given back to the schedule", given)

    def _redis_down(self, why: str) -> None:
        """Log the outage once, however many looks and timers it holds up."""
        if not self._down:
            self._down = True
            logger.warning("%s; timers wait for Redis (claims are given back when it answers)", why)

    async def _fire_logged(self, user_id: Any, claim: GivenBack) -> None:
        saving = asyncio.Event()
        with watch_saving(saving):  # the task copies the context, and with it the event
            firing = asyncio.ensure_future(self._fire(user_id))
        try:
            if not await stored_or_cut(
                firing, saving, deadline=self._redis_deadline, probe=self._probe
            ):
                raise TimeoutError(f"Redis did not answer for {self._redis_deadline:g}s")
            await firing
        except NOT_REDIS as error:
            self._not_fired(user_id, error)
        except REDIS_TROUBLE as error:
            self._owed.append(claim)
            self._redis_down(f"timer of user {user_id} not fired: {error!r}")
            logger.debug("timer of user %s waits for Redis", user_id, extra={"user_id": user_id})
        except Exception as error:
            self._not_fired(user_id, error)
        finally:
            firing.cancel()  # only if this firing itself was cancelled (shutdown)

    def _not_fired(self, user_id: Any, error: Exception) -> None:
        logger.warning(
            "timer of user %s not fired (%r); it is tried again in %.0f s",
            user_id,
            error,
            self._claim_ttl_ms / 1000,
            extra={"user_id": user_id},
        )
