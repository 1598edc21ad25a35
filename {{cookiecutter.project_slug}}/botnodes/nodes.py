"""`Nodes`: routes each event to the user's node, one per user at a time, and stores the result.

Each way of changing a user tells the same story, one named step a module: take the user's
turn (queue.py, lease.py), load their node (load.py), run the node (step.py), commit what it
returned (commit.py), then send the replies it held back (outbox.py). This file only wires
the steps together, so a reader sees the order, and each rule lives with its own step. Here an
event and a timer tell it; a move from outside an event (`NodesUser.to`) tells it in
nodes_user.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, Unpack

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from .budget import ReplyBudget
from .codec import Decoded, NodeCodec
from .commit import Commit
from .errors import ConfigurationError, StateUnavailableError
from .graph import FlowGraph
from .lease import Lease, UserLocks
from .load import load
from .node import CtxT, EventT, Node, UserIdT
from .nodes_user import NodesUser
from .observer import NodesObserver, Notify
from .outbox import Outbox, collecting
from .queue import Turns
from .settings import NodesSettings, NodesTuning, settings_from
from .step import AnyNode, NodeSteps, Outcome
from .storage import LockRider, RedisClient, StateStore
from .timer_loop import TimerLoop
from .timers import PendingTimers, TimerSchedule

logger = logging.getLogger("botnodes")


class Nodes(Generic[CtxT, EventT, UserIdT]):
    """Keeps every user on a node in Redis and routes their events to it.

    One user's events run one at a time, in arrival order (`arrival_order`, Telegram's
    `update_id` in the runtime, orders them across processes: line.py, lease.py); an event
    handled before (a re-delivered update, by its `event_id`) is not handled again.

    The tuning knobs come as `settings=NodesSettings(...)` or, as in botnodes 0.1.0, as
    keywords (`lock_ttl=...`) that make the same settings; both at once is a
    ConfigurationError, so no reader has to guess which one wins.

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

    `reply_budget` (budget.py) paces the replies inside the commit: no extra round trip.
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
        settings: NodesSettings | None = None,
        key_aliases: Mapping[str, str] | None = None,
        observer: NodesObserver | None = None,
        event_visit: Callable[[EventT], int | None] | None = None,
        event_id: Callable[[EventT], str | None] | None = None,
        arrival_order: Callable[[], int | None] | None = None,
        start_node: type[Node[CtxT, EventT, UserIdT, Any]] | None = None,
        clock: Callable[[], float] = time.time,
        reply_budget: ReplyBudget | None = None,
        **tuning: Unpack[NodesTuning],
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
        self._settings = settings = settings_from(settings, tuning)
        self._codec: NodeCodec[CtxT, EventT, UserIdT] = NodeCodec(
            nodes_dict, discriminator_field, key_aliases
        )
        self._store = StateStore(
            redis_client,
            redis_property_name,
            state_ttl_ms=settings.state_ttl_ms,
            lock_ttl_ms=settings.lock_ttl_ms,
            legacy=settings.migrate_legacy,
            dedupe_window_ms=settings.dedupe_window_ms,
        )
        self._timers = TimerSchedule(
            redis_client,
            redis_property_name,
            shards=settings.timer_shards,
            run=self._store.run_script,
        )
        self._ctx = ctx
        self._event_to_user_id = event_to_user_id
        self._event_id = event_id
        self._notify = Notify(observer)
        # With the start node known, the declared flow is checked now: a deploy with a node
        # nobody can reach, or a target nobody registered, fails here and not for a user.
        self._graph = FlowGraph(nodes_dict, start_node) if start_node is not None else None
        if self._graph is not None:
            self._graph.check()
        self._steps = NodeSteps(
            codec=self._codec,
            ctx=ctx,
            get_start_node=get_start_node,
            event_visit=event_visit,
            graph=self._graph,
            strict_transitions=settings.strict_transitions,
            clock=clock,
            notify=self._notify,
        )
        self._timer_loop = TimerLoop(
            self._timers,
            self._fire,
            settings=settings,
            now_ms=self._steps.now_ms,
            on_redis_error=lambda: self._notify(self._notify.observer.redis_error),
            ping=redis_client.ping,
        )
        self._locks: UserLocks[UserIdT] = UserLocks(
            self._store,
            lock_ttl=settings.lock_ttl,
            lock_wait_timeout=settings.lock_wait_timeout,
            max_waiting=settings.max_waiting_per_user,
            unavailable=self._unavailable,
        )
        self._turns: Turns[UserIdT] = Turns(
            self._locks, max_concurrent=settings.max_concurrent, arrival_order=arrival_order
        )
        self._commit: Commit[CtxT, EventT, UserIdT] = Commit(
            codec=self._codec,
            store=self._store,
            timers=self._timers,
            locks=self._locks,
            settings=settings,
            notify=self._notify,
            budget=reply_budget,
        )

    @property
    def settings(self) -> NodesSettings:
        """The tuning this instance runs with, however it was given."""
        return self._settings

    @property
    def in_flight(self) -> int:
        """How many routes or `to()` calls are running now."""
        return self._turns.in_flight

    @property
    def timer_firings(self) -> int:
        """How many claimed timers `run_timers` is firing now."""
        return self._timer_loop.firings

    @property
    def busy_users(self) -> int:
        """How many users have an event being handled or waiting in this process."""
        return len(self._locks)

    @property
    def ctx(self) -> CtxT:
        """The context the nodes get (e.g. for a router that needs the bot's services)."""
        return self._ctx

    @property
    def redis(self) -> RedisClient:
        """The Redis client the state is kept in, to register a bot's own scripts on."""
        return self._store.redis

    @property
    def graph(self) -> FlowGraph | None:
        """The declared flow (when `start_node` was given), e.g. to draw it."""
        return self._graph

    async def run_script(self, script: AsyncScript, keys: list[str], args: list[str]) -> Any:
        """Run a script of the bot's own in the same batches as botnodes' scripts.

        On one Redis, calls made in the same event-loop turn share one round trip; a script
        whose keys carry the user's hash tag (`{user_id}`) also works on a Redis Cluster.
        """
        return await self._store.run_script(script, keys, args)

    def read_with_lock(self, rider: LockRider) -> None:
        """Have a small note of each user (the runtime's language) read by the lock script.

        `rider(user_id)` gives the read for the user whose lock is being taken, or None; the
        read then costs no script and no round trip of its own (storage.NoteRead).
        """
        self._store.read_with_lock(rider)

    async def mark_handled(self, user_id: UserIdT, event_id: str) -> bool:
        """For an update handled outside the nodes: True the first time, False for a
        re-delivery of it (then do nothing). See handled.py; one script call, in the batches.

        Raises StateUnavailableError when Redis can't be reached (nothing was marked).
        """
        try:
            first = await self._store.mark_handled(user_id, event_id)
        except RedisError as error:
            raise self._unavailable(user_id, error) from error
        if not first:
            self._duplicate(user_id, event_id)
        return first

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
        async with self._turns.turn(user_id, event_id) as lease:  # queue, then lease
            if lease.locked.duplicate:
                return self._duplicate(user_id, event_id)
            async with self._turns.slot():
                current = load(lease, self._codec, self._notify)
                with collecting(outbox):
                    outcome, next_node = await self._steps.on_event(user_id, event, current, lease)
                if next_node is None:
                    return outcome
                to_key = await self._commit_event(lease, next_node, event_id, outbox, current)
            # The step is stored and the slot is free for other users: a reply held up by
            # Telegram's flood control keeps only this user waiting.
            await outbox.flush(user_id)
        duration = time.perf_counter() - started
        self._notify.transition(user_id, current.key if current else None, to_key, duration, lease)
        return outcome

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - returns False, never raises
        """Wait until no event or timer is being handled; False if some still run after `timeout`.

        Call it on shutdown after the bot stopped taking updates and `run_timers` was
        cancelled, so no transition is cut in half and stored steps deliver their replies.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        fired = await self._timer_loop.wait_firings(timeout)
        left = max(deadline - asyncio.get_running_loop().time(), 0.0)
        return await self._turns.drain(left) and fired

    async def abandon_timers(self) -> None:
        """Cut the timer firings still running after `drain` gave up (see `TimerLoop`)."""
        await self._timer_loop.cancel_firings()

    async def fire_due(self, now: float | None = None) -> int:
        """Fire the timers due by `now` (default: the clock) that this process claims.

        Returns how many users were claimed; each one's timer ran (or was found stale, or
        failed and was logged) before this returns. `run_timers` calls it in a loop; a test
        with its own clock calls it directly, after moving the clock.
        """
        return await self._timer_loop.fire_due(None if now is None else math.floor(now * 1000))

    async def run_timers(self) -> None:
        """Fire due timers until cancelled: run it as a task in every process of the bot.

        Every `timer_poll_interval` it claims the due users, each this process's alone (see
        timers.py); a firing waits on its own user only, and on a mute Redis `redis_deadline`
        (timer_loop.py). Cancelling it stops the claiming; firings go on until `drain` (and
        `abandon_timers`, past the deadline)."""
        await self._timer_loop.run()

    async def _fire(self, user_id: UserIdT) -> Outcome | None:
        """The user's turn for their earliest due timer; None if none is due (a stale look).

        Under the user's lock the stored value decides: a timer that an event replaced, that
        belonged to a node the user left, or that already fired, is no longer pending. A look
        that finds a timer pending but not yet due sets the schedule to it; one that finds
        none drops the user from the schedule.
        """
        outbox = Outbox()
        async with self._turns.turn(user_id, "") as lease:
            async with self._turns.slot():
                current = load(lease, self._codec, self._notify, quiet=True)
                pending = current.timers if current else None
                due = pending.next_due(self._steps.now_ms()) if pending else None
                if current is None or pending is None or due is None:
                    if current is not None and pending is not None and pending.due:
                        # Woken early (a step armed the timers again, later, and left the
                        # schedule lazy): look again at their real due time, stored with them.
                        await self._commit(
                            lease,
                            current.node,
                            "",
                            timers=pending,
                            replies=0,
                            before=current,
                            exact=True,
                        )
                    else:  # no timer left (the user left the node): drop the entry
                        await self._timers.set(user_id, None)
                    return None
                name, due_ms = due
                lateness = (self._steps.now_ms() - due_ms) / 1000
                self._notify(
                    functools.partial(
                        self._notify.observer.timer_fired, current.key, name, lateness
                    )
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
                    step = await self._steps.on_timeout(user_id, current, pending, name, due_ms)
                if step is None:  # on_timeout failed: its data and replies are dropped
                    outbox = Outbox()
                    left = {n: due for n, due in pending.due.items() if n != name}
                    unchanged = self._codec.decode(lease.locked.value or b"").node
                    step = unchanged, PendingTimers(pending.armed_ms, left)
                await self._commit(
                    lease,
                    step[0],
                    "",
                    timers=step[1],
                    replies=len(outbox),
                    before=current,
                    fired=name,
                    exact=True,
                )
            await outbox.flush(user_id)
        return Outcome.TIMED_OUT

    async def _commit_event(
        self,
        lease: Lease,
        node: AnyNode[CtxT, EventT, UserIdT],
        event_id: str,
        outbox: Outbox,
        before: Decoded[CtxT, EventT, UserIdT] | None,
    ) -> str:
        """Commit the step an event (or `to()`) made: the node's timers count from now."""
        return await self._commit(
            lease,
            node,
            event_id,
            timers=self._steps.arm(node, lease.user_id),
            replies=len(outbox),
            before=before,
        )

    def _duplicate(self, user_id: UserIdT, event_id: str) -> Outcome:
        logger.info(
            "user %s: event %s was handled before (a re-delivery); not handled again",
            user_id,
            event_id,
            extra={"user_id": user_id, "event_id": event_id},
        )
        self._notify(self._notify.observer.duplicate)
        return Outcome.DUPLICATE

    def _unavailable(self, user_id: UserIdT, error: RedisError) -> StateUnavailableError:
        self._notify(self._notify.observer.redis_error)
        logger.error(
            "Redis unavailable for user %s: %s", user_id, error, extra={"user_id": user_id}
        )
        return StateUnavailableError(f"state of user {user_id} is unavailable: {error}")
