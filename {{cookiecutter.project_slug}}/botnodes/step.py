"""The node step: the only place botnodes runs the bot's own code (a node's hooks).

Node code can raise anything, run long, or return a node nobody registered; each hook runs
here behind one rule per hook (what a failure means for the user), so the steps around it
(load, commit, replies) deal only with a node to store or nothing.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic

from .codec import Decoded, NodeCodec
from .errors import UndeclaredTransitionError
from .graph import FlowGraph
from .lease import Lease
from .node import CtxT, EventT, Node, UserIdT
from .observer import Notify
from .timers import PendingTimers, after_firing, arm

logger = logging.getLogger("botnodes")

AnyNode = Node[CtxT, EventT, UserIdT, Any]


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


class NodeSteps(Generic[CtxT, EventT, UserIdT]):
    """Runs a node's hooks for one step of its user, turning their failures into outcomes."""

    def __init__(
        self,
        *,
        codec: NodeCodec[CtxT, EventT, UserIdT],
        ctx: CtxT,
        get_start_node: Callable[[EventT], AnyNode[CtxT, EventT, UserIdT]],
        event_visit: Callable[[EventT], int | None] | None,
        graph: FlowGraph | None,
        strict_transitions: bool,
        clock: Callable[[], float],
        notify: Notify,
    ) -> None:
        self._codec = codec
        self._ctx = ctx
        self._get_start_node = get_start_node
        self._event_visit = event_visit
        self._graph = graph
        self._strict_transitions = strict_transitions
        self._clock = clock
        self._notify = notify

    async def on_event(
        self,
        user_id: UserIdT,
        event: EventT,
        current: Decoded[CtxT, EventT, UserIdT] | None,
        lease: Lease,
    ) -> tuple[Outcome, AnyNode[CtxT, EventT, UserIdT] | None]:
        """Run the node code for one event; the node to store, or None to store nothing."""
        if current is None:
            start = self._get_start_node(event)
            await self.enter(start, user_id, visit=first_visit(lease))
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
            self._failed(current.key, "on_event", user_id, "user stays on it, data unchanged")
            return Outcome.FAILED, None
        if returned is None:
            return Outcome.STAYED, current.node
        self._check_declared(current.key, returned)
        await self.enter(returned, user_id, visit=current.visit + 1)
        return Outcome.MOVED, returned

    async def on_timeout(
        self,
        user_id: UserIdT,
        current: Decoded[CtxT, EventT, UserIdT],
        pending: PendingTimers,
        name: str,
        due_ms: int,
    ) -> tuple[AnyNode[CtxT, EventT, UserIdT], PendingTimers] | None:
        """Run on_timeout: the node to store and its timers; None if on_timeout raised."""
        try:
            returned = await current.node.on_timeout(user_id, name, self._ctx)
            if returned is not None:
                self._codec.key_of(returned)
        except Exception:
            self._failed(current.key, "on_timeout", user_id, f"its timer {name!r} is dropped")
            return None
        if returned is None:
            timeouts = self._timeouts(current.node, user_id)
            return current.node, after_firing(pending, name, due_ms, timeouts)
        await self.enter(returned, user_id, visit=current.visit + 1)
        return returned, self.arm(returned, user_id)

    async def enter(
        self, node: AnyNode[CtxT, EventT, UserIdT], user_id: UserIdT, *, visit: int
    ) -> None:
        """Run on_enter; a failure is logged and the transition kept: on_event already acted."""
        node.visit = visit
        try:
            await node.on_enter(user_id, self._ctx)
        except Exception:
            self._failed(
                self._codec.key_of(node), "on_enter", user_id, "the user is stored on it anyway"
            )

    def arm(self, node: AnyNode[CtxT, EventT, UserIdT], user_id: UserIdT) -> PendingTimers:
        """The node's timers, counted from now (its user's latest event on it)."""
        return arm(self._timeouts(node, user_id), self.now_ms())

    def now_ms(self) -> int:
        return math.floor(self._clock() * 1000)

    def _timeouts(
        self, node: AnyNode[CtxT, EventT, UserIdT], user_id: UserIdT
    ) -> Mapping[str, float]:
        """`node.timeouts`; a failure is logged and arms no timer."""
        try:
            return node.timeouts(self._ctx)
        except Exception:
            self._failed(self._codec.key_of(node), "timeouts", user_id, "no timers armed")
            return {}

    def _check_declared(self, from_key: str, returned: AnyNode[CtxT, EventT, UserIdT]) -> None:
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

    def _failed(self, key: str, hook: str, user_id: UserIdT, consequence: str) -> None:
        """Count and log (with its traceback) an exception a node's `hook` raised."""
        self._notify(lambda: self._notify.observer.node_failed(key, hook))
        logger.exception(  # noqa: LOG004 - only ever called in an `except` block
            "%s of node %r failed for user %s; %s",
            hook,
            key,
            user_id,
            consequence,
            extra={"user_id": user_id, "node": key},
        )


def first_visit(lease: Lease) -> int:
    """The visit of a user starting over: the clock in microseconds.

    Visits only ever grow for a user, across expiry and resets: a fresh start lands above any
    visit they had before (nobody makes a step per microsecond), so an idempotency key or a
    button of an earlier life can never match a visit of this one. The Redis server's clock
    when nothing was stored (one clock for all replicas); this process's when a stored value
    could not be read (rare: a reset).
    """
    return lease.locked.now_us or time.time_ns() // 1000
