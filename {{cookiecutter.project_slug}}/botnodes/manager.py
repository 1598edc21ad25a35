"""`Nodes`: routes each event to the user's node, one per user at a time, and stores the result."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from .codec import Decoded, NodeCodec
from .errors import (
    ConfigurationError,
    CorruptStateError,
    StateTooLargeError,
    StateUnavailableError,
    TransitionLostError,
    UndeclaredTransitionError,
)
from .graph import FlowGraph
from .lease import Lease, UserLocks
from .node import CtxT, EventT, Node, UserIdT
from .observer import NodesObserver
from .outbox import Outbox, collecting
from .storage import (
    MAX_TTL_SECONDS,
    REFUSED,
    STORED_WITHOUT_LOCK,
    RedisClient,
    StateStore,
)
from .timers import PendingTimers, TimerLoop, TimerSchedule, after_firing, arm, changes

logger = logging.getLogger("botnodes")

_MAX_COMMIT_BACKOFF = 1.0  # seconds between two tries of a commit Redis did not take


class Outcome(enum.Enum):
    """What `Nodes.route` did with an event (a bot answers a button press by it)."""

    #: A new (or reset) user was put on the start node; the event was not passed on.
    STARTED = "started"
    #: `on_event` returned a node: it was entered and stored.
    MOVED = "moved"
    #: `on_event` returned None: the node's data was stored, nothing entered.
    STAYED = "stayed"
    #: The event belongs to an older visit (`event_visit`): no node code ran.
    STALE = "stale"
    #: `on_event` raised: logged, and the user stays where they were with their data.
    FAILED = "failed"
    #: A timer of the user's node fell due and its `on_timeout` ran (`Nodes.fire_due`).
    TIMED_OUT = "timed_out"
    #: The event was handled before (`event_id` seen: a re-delivered update): nothing ran.
    DUPLICATE = "duplicate"


class Nodes(Generic[CtxT, EventT, UserIdT]):
    """Keeps every user on a node in Redis and routes their events to it.

    One user's events run one at a time, in arrival order, across all processes that share
    the Redis (see lease.py); an event that was handled before (a re-delivered update, by its
    `event_id`) is not handled again.

    `lock_during_replies` keeps the user's Redis lock while a stored step's replies go out,
    so they leave in order even when the user's next update reaches another process; it costs
    one more script call per step that replies. With one process per bot (long polling) the
    local queue already keeps that order: pass False and a step costs two.

    Nodes may arm timers (`Node.timeouts`, see timers.py): run `run_timers()` as a task in
    every process. `clock` (seconds since the epoch) is what due times are counted with, so a
    test can move time and call `fire_due()`; processes sharing a Redis need synchronised
    clocks (NTP). A claimed timer that was not fired (the process died) fires again after
    `timer_claim_ttl`; each process looks every `timer_poll_interval` at `timer_shards`
    sorted sets (one Redis Cluster slot each).
    """

    def __init__(  # noqa: PLR0917 - positional like botnodes 0.1.0, for compatibility
        self,
        redis_client: RedisClient,
        redis_property_name: str,
        nodes_dict: Mapping[str, type[Node[CtxT, EventT, UserIdT, Any]]],
        discriminator_field: str,
        get_start_node: Callable[[EventT], Node[CtxT, EventT, UserIdT, Any]],
        ctx: CtxT,
        event_to_user_id: Callable[[EventT], UserIdT],
        *,
        key_aliases: Mapping[str, str] | None = None,
        state_ttl: float | None = None,
        lock_ttl: float = 5.0,
        lock_wait_timeout: float = 10.0,
        migrate_legacy: bool = True,
        observer: NodesObserver | None = None,
        event_visit: Callable[[EventT], int | None] | None = None,
        event_id: Callable[[EventT], str | None] | None = None,
        dedupe_window: float = 86_400.0,
        state_max_bytes: int | None = None,
        lock_during_replies: bool = True,
        max_concurrent: int | None = None,
        max_waiting_per_user: int | None = None,
        commit_timeout: float | None = None,
        start_node: type[Node[CtxT, EventT, UserIdT, Any]] | None = None,
        strict_transitions: bool = False,
        clock: Callable[[], float] = time.time,
        timer_shards: int = 8,
        timer_claim_ttl: float = 30.0,
        timer_poll_interval: float = 0.2,
    ) -> None:
        if not isinstance(redis_property_name, str) or not redis_property_name:
            raise ConfigurationError(
                f"redis_property_name {redis_property_name!r} must be a non-empty string"
            )
        if "{" in redis_property_name or "}" in redis_property_name:
            raise ConfigurationError(
                f"redis_property_name {redis_property_name!r} must not contain braces: "
                "botnodes adds the Redis Cluster hash tag itself"
            )
        _require_positive("lock_ttl", lock_ttl)
        _require_positive("lock_wait_timeout", lock_wait_timeout)
        _require_positive("dedupe_window", dedupe_window)
        _require_positive("timer_claim_ttl", timer_claim_ttl)
        _require_positive("timer_poll_interval", timer_poll_interval)
        if state_ttl is not None:
            _require_positive("state_ttl", state_ttl)
        if commit_timeout is not None:
            _require_positive("commit_timeout", commit_timeout)
        for name, count in (
            ("max_concurrent", max_concurrent),
            ("max_waiting_per_user", max_waiting_per_user),
            ("state_max_bytes", state_max_bytes),
            ("timer_shards", timer_shards),
        ):
            if count is not None and not (isinstance(count, int) and count >= 1):
                raise ConfigurationError(f"{name}={count!r} must be a whole number of at least 1")
        self._codec: NodeCodec[CtxT, EventT, UserIdT] = NodeCodec(
            nodes_dict, discriminator_field, key_aliases
        )
        self._store = StateStore(
            redis_client,
            redis_property_name,
            state_ttl_ms=math.ceil(state_ttl * 1000) if state_ttl else None,
            lock_ttl_ms=math.ceil(lock_ttl * 1000),
            legacy=migrate_legacy,
            dedupe_window_ms=math.ceil(dedupe_window * 1000),
        )
        self._timers = TimerSchedule(
            redis_client, redis_property_name, shards=timer_shards, run=self._store.run_script
        )
        self._clock = clock
        self._timer_loop = TimerLoop(
            self._timers,
            self._fire,
            claim_ttl_ms=math.ceil(timer_claim_ttl * 1000),
            poll_interval=timer_poll_interval,
            now_ms=self._now_ms,
            on_redis_error=lambda: self._notify(self._observer.redis_error),
        )
        self._get_start_node = get_start_node
        self._ctx = ctx
        self._event_to_user_id = event_to_user_id
        self._observer = observer or NodesObserver()
        self._lock_ttl_ms = math.ceil(lock_ttl * 1000)
        self._commit_timeout = commit_timeout if commit_timeout is not None else lock_wait_timeout
        self._event_visit = event_visit
        self._event_id = event_id
        self._state_max_bytes = state_max_bytes
        self._lock_during_replies = lock_during_replies
        # With the start node known, the declared flow is checked now: a deploy with a node
        # nobody can reach, or a target nobody registered, fails here and not for a user.
        self._graph = FlowGraph(nodes_dict, start_node) if start_node is not None else None
        if self._graph is not None:
            self._graph.check()
        self._strict_transitions = strict_transitions
        self._locks: UserLocks[UserIdT] = UserLocks(
            self._store,
            lock_ttl=lock_ttl,
            lock_wait_timeout=lock_wait_timeout,
            max_waiting=max_waiting_per_user,
            unavailable=self._unavailable,
        )
        self._slots = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """How many routes or `to()` calls are running now."""
        return self._in_flight

    @property
    def busy_users(self) -> int:
        """How many users have an event being handled or waiting in this process."""
        return len(self._locks)

    async def run_script(self, script: AsyncScript, keys: list[str], args: list[str]) -> Any:
        """Run a script of the bot's own in the same batches as botnodes' scripts.

        On one Redis, calls made in the same event-loop turn share one round trip; a script
        whose keys carry the user's hash tag (`{user_id}`) also works on a Redis Cluster.
        """
        return await self._store.run_script(script, keys, args)

    def user(self, user_id: UserIdT) -> NodesUser[CtxT, EventT, UserIdT]:
        """Address one user from outside an event (e.g. a /start command or a scheduled job)."""
        return NodesUser(self, user_id)

    async def route(self, event: EventT) -> Outcome:
        """Handle one event: pass it to the user's node and store the node that comes next.

        A user without a stored node gets `get_start_node(event)`; its `on_enter` runs and
        this first event is not passed to `on_event`. An exception in `on_event` is logged
        and leaves the user where they were. What the nodes send through `after_commit`
        goes out only after the result is stored, in order, before the user's next event.

        Raises StateUnavailableError (nothing changed) when Redis can't be reached or the
        user's lock can't be had in time, UserBusyError (a StateUnavailableError) when the
        user has too many events waiting, and TransitionLostError when the node ran but its
        result could not be stored (StateTooLargeError when it was too big to store).
        """
        user_id = self._event_to_user_id(event)
        event_id = (self._event_id(event) if self._event_id else None) or ""
        started = time.perf_counter()
        outbox = Outbox()
        async with self._turn(user_id, event_id) as lease:
            if lease.locked.duplicate:
                return self._duplicate(user_id, event_id)
            async with self._slot():
                current = self._load(lease)
                with collecting(outbox):
                    outcome, next_node = await self._transition(user_id, event, current, lease)
                if next_node is None:
                    return outcome
                to_key = await self._commit(
                    lease,
                    next_node,
                    event_id,
                    replies=len(outbox),
                    before=current,
                )
            # The step is stored and the slot is free for other users: a reply held up by
            # Telegram's flood control keeps only this user waiting.
            await outbox.flush(user_id)
        duration = time.perf_counter() - started
        from_key = current.key if current else None
        self._notify(lambda: self._observer.transition(from_key, to_key, duration, lease.lock_wait))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "transition user=%s from=%s to=%s duration_ms=%.1f lock_wait_ms=%.1f",
                user_id,
                from_key,
                to_key,
                duration * 1000,
                lease.lock_wait * 1000,
                extra={
                    "user_id": user_id,
                    "from_node": from_key,
                    "to_node": to_key,
                    "duration_ms": duration * 1000,
                    "lock_wait_ms": lease.lock_wait * 1000,
                },
            )
        return outcome

    async def _transition(
        self,
        user_id: UserIdT,
        event: EventT,
        current: Decoded[CtxT, EventT, UserIdT] | None,
        lease: Lease,
    ) -> tuple[Outcome, Node[CtxT, EventT, UserIdT, Any] | None]:
        """Run the node code for one event; the node to store, or None to store nothing."""
        if current is None:
            start = self._get_start_node(event)
            await self._enter(start, user_id, visit=_first_visit(lease))
            return Outcome.STARTED, start
        if self._event_visit is not None:
            visit = self._event_visit(event)
            if visit is not None and visit != current.visit:
                logger.debug(
                    "user %s: event of visit %s ignored, the user is on visit %s",
                    user_id,
                    visit,
                    current.visit,
                    extra={"user_id": user_id, "node": current.key},
                )
                return Outcome.STALE, None
        try:
            returned = await current.node.on_event(user_id, event, self._ctx)
            if returned is not None:  # an unregistered node could never be read back
                self._codec.key_of(returned)
        except Exception:
            self._node_failed(current.key, "on_event", user_id, "user stays on it, data unchanged")
            return Outcome.FAILED, None
        if returned is None:
            return Outcome.STAYED, current.node
        self._check_declared(current.key, returned)
        await self._enter(returned, user_id, visit=current.visit + 1)
        return Outcome.MOVED, returned

    def _check_declared(self, from_key: str, returned: Node[CtxT, EventT, UserIdT, Any]) -> None:
        """A transition the flow does not declare: an error in strict mode, else a warning."""
        if self._graph is None or self._graph.allows(from_key, type(returned)):
            return
        message = (
            f"node {from_key!r} returned {type(returned).__qualname__}, which the return "
            "annotation of its on_event does not declare"
        )
        if self._strict_transitions:
            raise UndeclaredTransitionError(message)
        logger.warning("%s", message, extra={"node": from_key})

    @property
    def graph(self) -> FlowGraph | None:
        """The declared flow (when `start_node` was given), e.g. to draw it."""
        return self._graph

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - returns False, never raises
        """Wait until no event is being handled; False if some still run after `timeout` seconds.

        Call it on shutdown after the bot stopped taking updates, so no transition is cut in half.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def _put(
        self, user_id: UserIdT, node: Node[CtxT, EventT, UserIdT, Any], event_id: str
    ) -> bool:
        """`NodesUser.to`: False if `event_id` was handled before (nothing done)."""
        self._codec.key_of(node)
        outbox = Outbox()
        async with self._turn(user_id, event_id) as lease:
            if lease.locked.duplicate:
                self._duplicate(user_id, event_id)
                return False
            async with self._slot():
                current = self._load(lease, quiet=True)
                visit = current.visit + 1 if current else _first_visit(lease)
                with collecting(outbox):
                    await self._enter(node, user_id, visit=visit)
                await self._commit(lease, node, event_id, replies=len(outbox), before=current)
            await outbox.flush(user_id)
        return True

    async def _get(self, user_id: UserIdT) -> Node[CtxT, EventT, UserIdT, Any] | None:
        try:
            raw = await self._store.read(user_id)
        except RedisError as error:
            raise self._unavailable(user_id, error) from error
        if raw is None:
            return None
        try:
            return self._codec.decode(raw).node
        except CorruptStateError as error:
            logger.warning(
                "stored state of user %s can't be read (%s); get_node() returns None",
                user_id,
                error.reason,
                extra={"user_id": user_id},
            )
            return None

    @asynccontextmanager
    async def _turn(self, user_id: UserIdT, event_id: str) -> AsyncIterator[Lease]:
        """The user's turn: queued in this process, then their Redis lock and state.

        Leaving it releases the lock unless the commit did, or hands it to the user's next
        event waiting in this process.
        """
        self._in_flight += 1
        self._idle.clear()
        try:
            async with self._locks.queue(user_id) as started:
                lease = await self._locks.take(user_id, event_id, started)
                try:
                    yield lease
                finally:
                    await self._locks.finish(lease)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    def _slot(self) -> AbstractAsyncContextManager[Any]:
        """One of `max_concurrent` slots, taken only by an event whose user's turn it is."""
        return self._slots if self._slots is not None else contextlib.nullcontext()

    def _duplicate(self, user_id: UserIdT, event_id: str) -> Outcome:
        logger.info(
            "user %s: event %s was handled before (a re-delivery); not handled again",
            user_id,
            event_id,
            extra={"user_id": user_id, "event_id": event_id},
        )
        self._notify(self._observer.duplicate)
        return Outcome.DUPLICATE

    def _load(self, lease: Lease, *, quiet: bool = False) -> Decoded[CtxT, EventT, UserIdT] | None:
        """Decode the user's node; None means start over (a new user, or unreadable state).

        Whatever was stored, this logs one warning naming what was wrong and never raises.
        """
        locked = lease.locked
        problems = [locked.repairs] if locked.repairs else []
        decoded = None
        if locked.value is not None:
            if locked.from_legacy:
                logger.info("moving user %s out of the botnodes 0.1.0 hash", lease.user_id)
            try:
                decoded = self._codec.decode(locked.value)
            except CorruptStateError as error:
                problems.append(error.reason)
        if not problems or quiet:
            pass
        elif decoded is None and (locked.value is not None or "state key" in locked.repairs):
            reason = "; ".join(problems)
            self._notify(lambda: self._observer.reset(reason))
            logger.warning(
                "resetting user %s to the start node: %s",
                lease.user_id,
                reason,
                extra={"user_id": lease.user_id, "reason": reason},
            )
        else:
            reason = "; ".join(problems)
            logger.warning(
                "repaired the keys of user %s: %s",
                lease.user_id,
                reason,
                extra={"user_id": lease.user_id, "reason": reason},
            )
        if decoded is not None and decoded.upgraded and not quiet:
            logger.warning(
                "upgraded stored state of user %s: %s",
                lease.user_id,
                decoded.upgraded,
                extra={"user_id": lease.user_id},
            )
        return decoded

    async def _enter(
        self, node: Node[CtxT, EventT, UserIdT, Any], user_id: UserIdT, *, visit: int
    ) -> None:
        """Run on_enter; a failure is logged and the transition kept: on_event already acted."""
        node.visit = visit
        try:
            await node.on_enter(user_id, self._ctx)
        except Exception:
            self._node_failed(
                self._codec.key_of(node), "on_enter", user_id, "the user is stored on it anyway"
            )

    def _node_failed(self, key: str, hook: str, user_id: UserIdT, consequence: str) -> None:
        """Count and log (with its traceback) an exception a node's `hook` raised."""
        self._notify(lambda: self._observer.node_failed(key, hook))
        logger.exception(  # noqa: LOG004 - only ever called in an `except` block
            "%s of node %r failed for user %s; %s",
            hook,
            key,
            user_id,
            consequence,
            extra={"user_id": user_id, "node": key},
        )

    async def _commit(
        self,
        lease: Lease,
        node: Node[CtxT, EventT, UserIdT, Any],
        event_id: str,
        *,
        replies: int,
        before: Decoded[CtxT, EventT, UserIdT] | None,
        timers: PendingTimers | None = None,
        fired: str | None = None,
    ) -> str:
        """Store the node, retrying while Redis is away: the write is safe to repeat.

        The node is stored with its pending `timers` (by default its `timeouts` from now:
        an event replaces them), and the user's place in the timer
        schedule is set in the same batch (nothing is sent for a user who had no timers and
        has none). With replies to send, the lock is kept (and kept alive) until they are out.
        Raises TransitionLostError if it can't be stored within `commit_timeout`, or if
        another writer changed the user's state since it was read; StateTooLargeError if
        the node's data is over `state_max_bytes`.
        """
        key = self._codec.key_of(node)
        if timers is None:
            timers = self._arm(node, lease.user_id)
        value = self._codec.encode(node, timers)
        self._check_size(lease.user_id, key, value)
        self._locks.stop_keepalive(lease)
        deadline = time.perf_counter() + self._commit_timeout
        delay = 0.05
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
                        keep_lock_ms=self._lock_ttl_ms
                        if replies and self._lock_during_replies
                        else 0,
                    )
                ]
                if timers.due or (before and before.timers):
                    # Sent first, in the commit's batch: a crash between the two leaves the
                    # schedule early (a harmless look), never late.
                    writes.insert(0, self._timers.set(lease.user_id, timers.earliest))
                result = (await asyncio.gather(*writes))[-1]
                break
            except RedisError as error:
                self._notify(self._observer.redis_error)
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
        lease.committed = True
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
        if replies:
            self._locks.replying(lease, lock_kept=self._lock_during_replies)
        self._count_timers(before, key, timers, fired)
        return key

    def _arm(self, node: Node[CtxT, EventT, UserIdT, Any], user_id: UserIdT) -> PendingTimers:
        """The node's timers, counted from now (its user's latest event on it)."""
        return arm(self._timeouts(node, user_id), self._now_ms())

    def _timeouts(
        self, node: Node[CtxT, EventT, UserIdT, Any], user_id: UserIdT
    ) -> Mapping[str, float]:
        """`node.timeouts`; a failure is logged and arms no timer."""
        try:
            return node.timeouts(self._ctx)
        except Exception:
            self._node_failed(self._codec.key_of(node), "timeouts", user_id, "no timers armed")
            return {}

    def _now_ms(self) -> int:
        return math.floor(self._clock() * 1000)

    def _count_timers(
        self,
        before: Decoded[CtxT, EventT, UserIdT] | None,
        key: str,
        timers: PendingTimers | None,
        fired: str | None,
    ) -> None:
        scheduled, cancelled = changes(before.timers if before else None, timers)
        from_key = before.key if before else key
        for name in scheduled:
            self._notify(functools.partial(self._observer.timer_scheduled, key, name))
        for name in cancelled:
            if name != fired:
                self._notify(functools.partial(self._observer.timer_cancelled, from_key, name))

    async def fire_due(self, now: float | None = None) -> int:
        """Fire the timers due by `now` (default: the clock) that this process claims.

        Returns how many users were claimed; each one's timer ran (or was found stale, or
        failed and was logged) before this returns. `run_timers` calls it in a loop; a test
        with its own clock calls it directly, after moving the clock.
        """
        return await self._timer_loop.fire_due(None if now is None else math.floor(now * 1000))

    async def run_timers(self) -> None:
        """Fire due timers until cancelled: run it as a task in every process of the bot.

        Every `timer_poll_interval` it claims the users whose timers are due; a claimed user
        is this process's alone (see timers.py), so replicas never fire a timer twice.
        Cancelling it gives the timers it claimed a moment (1 s) to be fired.
        """
        await self._timer_loop.run()

    async def _fire(self, user_id: UserIdT) -> Outcome | None:
        """The user's turn for their earliest due timer; None if none is due (a stale look).

        Under the user's lock the stored value decides: a timer that an event replaced, that
        belonged to a node the user left, or that already fired, is no longer pending.
        """
        outbox = Outbox()
        async with self._turn(user_id, "") as lease:
            async with self._slot():
                current = self._load(lease, quiet=True)
                pending = current.timers if current else None
                due = pending.next_due(self._now_ms()) if pending else None
                if current is None or pending is None or due is None:
                    await self._timers.set(user_id, pending.earliest if pending else None)
                    return None
                name, due_ms = due
                lateness = (self._now_ms() - due_ms) / 1000
                self._notify(
                    functools.partial(self._observer.timer_fired, current.key, name, lateness)
                )
                logger.debug(
                    "timer user=%s node=%s timer=%s lateness_ms=%.0f",
                    user_id,
                    current.key,
                    name,
                    lateness * 1000,
                    extra={"user_id": user_id, "node": current.key, "timer": name},
                )
                with collecting(outbox):
                    step = await self._time_out(user_id, current, pending, name, due_ms)
                if step is None:  # on_timeout failed: its data and replies are dropped
                    outbox = Outbox()
                    left = {n: due for n, due in pending.due.items() if n != name}
                    unchanged = self._codec.decode(lease.locked.value or b"").node
                    step = unchanged, PendingTimers(pending.armed_ms, left)
                await self._commit(
                    lease,
                    step[0],
                    "",
                    replies=len(outbox),
                    before=current,
                    timers=step[1],
                    fired=name,
                )
            await outbox.flush(user_id)
        return Outcome.TIMED_OUT

    async def _time_out(
        self,
        user_id: UserIdT,
        current: Decoded[CtxT, EventT, UserIdT],
        pending: PendingTimers,
        name: str,
        due_ms: int,
    ) -> tuple[Node[CtxT, EventT, UserIdT, Any], PendingTimers] | None:
        """Run on_timeout: the node to store and its timers; None if on_timeout raised."""
        try:
            returned = await current.node.on_timeout(user_id, name, self._ctx)
            if returned is not None:
                self._codec.key_of(returned)
        except Exception:
            self._node_failed(current.key, "on_timeout", user_id, f"its timer {name!r} is dropped")
            return None
        if returned is None:
            timeouts = self._timeouts(current.node, user_id)
            return current.node, after_firing(pending, name, due_ms, timeouts)
        await self._enter(returned, user_id, visit=current.visit + 1)
        return returned, self._arm(returned, user_id)

    def _check_size(self, user_id: UserIdT, key: str, value: str) -> None:
        """Refuse to store more than `state_max_bytes`: no node can grow a key without bound."""
        if self._state_max_bytes is None or len(value) <= self._state_max_bytes // 4:
            return  # a character is at most 4 bytes in UTF-8: no need to encode
        size = len(value.encode())
        if size <= self._state_max_bytes:
            return
        logger.error(
            "node %r of user %s is %d bytes, over state_max_bytes=%d; not stored, the user "
            "stays where they were",
            key,
            user_id,
            size,
            self._state_max_bytes,
            extra={"user_id": user_id, "node": key},
        )
        raise StateTooLargeError(
            f"node {key!r} of user {user_id} is {size} bytes, over the limit of "
            f"{self._state_max_bytes} (state_max_bytes): not stored",
            size=size,
            limit=self._state_max_bytes,
        )

    def _notify(self, call: Callable[[], None]) -> None:
        """Run an observer hook; a failing hook is logged, never passed on to routing."""
        try:
            call()
        except Exception:
            logger.exception("botnodes observer %r failed", self._observer)

    def _unavailable(self, user_id: UserIdT, error: RedisError) -> StateUnavailableError:
        self._notify(self._observer.redis_error)
        logger.error(
            "Redis unavailable for user %s: %s", user_id, error, extra={"user_id": user_id}
        )
        return StateUnavailableError(f"state of user {user_id} is unavailable: {error}")


class NodesUser(Generic[CtxT, EventT, UserIdT]):
    """One user's handle, for moving them or looking at their node from outside an event."""

    def __init__(self, nodes: Nodes[CtxT, EventT, UserIdT], user_id: UserIdT) -> None:
        self._nodes = nodes
        self._user_id = user_id

    async def to(self, node: Node[CtxT, EventT, UserIdT, Any], *, event_id: str = "") -> bool:
        """Put the user on `node`, running its on_enter, under the same lock as routing.

        Pass the `event_id` of the update that asked for it (e.g. a /start command) and a
        re-delivery of that update does nothing: then this returns False.
        """
        return await self._nodes._put(self._user_id, node, event_id)

    async def forget(self) -> None:
        """Delete the user's stored node, under their lock: their next event starts over."""
        async with self._nodes._turn(self._user_id, ""):
            try:
                await self._nodes._store.forget(self._user_id)
            except RedisError as error:
                raise self._nodes._unavailable(self._user_id, error) from error

    async def get_node(self) -> Node[CtxT, EventT, UserIdT, Any] | None:
        """The user's current node, or None if they have none (or it can't be read)."""
        return await self._nodes._get(self._user_id)


def _first_visit(lease: Lease) -> int:
    """The visit of a user starting over: the clock in microseconds.

    Visits only ever grow for a user, across expiry and resets: a fresh start lands above any
    visit they had before (nobody makes a step per microsecond), so an idempotency key or a
    button of an earlier life can never match a visit of this one. The Redis server's clock
    when nothing was stored (one clock for all replicas); this process's when a stored value
    could not be read (rare: a reset).
    """
    return lease.locked.now_us or time.time_ns() // 1000


def _require_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0 < value <= MAX_TTL_SECONDS):
        raise ConfigurationError(
            f"{name}={value!r} must be a positive number of seconds, at most {MAX_TTL_SECONDS:g} "
            "(the longest expiry Redis takes)"
        )
