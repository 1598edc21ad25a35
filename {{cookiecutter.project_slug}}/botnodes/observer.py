"""Hooks for counting what botnodes does (metrics), without botnodes knowing any metrics library."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lease import Lease

logger = logging.getLogger("botnodes")


class NodesObserver:
    """Called by `Nodes` at the moments an operator wants to count; every method does nothing.

    Subclass it and override what you need (the bot's Prometheus metrics do). Methods are
    called on the event loop in the middle of routing, so they must be quick and must not
    raise: an exception here is logged and ignored, never passed to the user's handler.
    Node keys are the registered keys of `nodes_dict`, a small fixed set: safe as labels.
    """

    def transition(
        self, from_node: str | None, to_node: str, duration: float, lock_wait: float
    ) -> None:
        """An event was routed and its result stored; `from_node` None = a new or reset user."""

    def reset(self, reason: str) -> None:
        """A user's stored value could not be read and they were sent to the start node."""

    def node_failed(self, node: str, hook: str) -> None:
        """`on_event` or `on_enter` (`hook`) of the node with key `node` raised."""

    def redis_error(self) -> None:
        """A Redis call failed (the event was not processed, or a release had to wait for TTL)."""

    def duplicate(self) -> None:
        """An event handled before (a re-delivered update) arrived again and was skipped."""

    def timer_scheduled(self, node: str, name: str) -> None:
        """A step armed (or re-armed) the timer `name` of the node with key `node`."""

    def timer_cancelled(self, node: str, name: str) -> None:
        """An event replaced the pending timer `name`, or the user left its node."""

    def timer_fired(self, node: str, name: str, lateness: float) -> None:
        """The timer `name` ran, `lateness` seconds after its due time."""


class Notify:
    """Calls the observer's hooks so that a failing one is logged, never passed on to routing.

    Every step reports through one of these, so a broken metrics hook can't fail a user's event
    wherever in the route it is counted.
    """

    def __init__(self, observer: NodesObserver | None) -> None:
        self.observer = observer or NodesObserver()

    def __call__(self, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception:
            logger.exception("botnodes observer %r failed", self.observer)

    def transition(
        self, user_id: object, from_key: str | None, to_key: str, duration: float, lease: Lease
    ) -> None:
        """Count and (at debug level) log a stored transition, once its replies are out."""
        observer = self.observer
        self(lambda: observer.transition(from_key, to_key, duration, lease.lock_wait))
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
