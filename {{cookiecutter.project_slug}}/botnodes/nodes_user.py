"""`NodesUser`: one user addressed from outside an event (a /start command, a paid order, a job).

A move takes the same turn as routing (queue, then lease), runs the node's on_enter and commits
like an event does, so it never races the user's own events and a re-delivered update that
asked for it (same `event_id`) does nothing. `Nodes` owns the parts; this is the story of a
move, a look and a forgetting.
"""

from __future__ import annotations

import logging
from typing import Any, Generic, Protocol

from redis.exceptions import RedisError

from .codec import Decoded, NodeCodec
from .errors import CorruptStateError, StateUnavailableError
from .lease import Lease
from .load import load
from .node import CtxT, EventT, Node, UserIdT
from .observer import Notify
from .outbox import Outbox, collecting
from .queue import Turns
from .step import AnyNode, NodeSteps, Outcome, first_visit
from .storage import StateStore

logger = logging.getLogger("botnodes")


class UserSteps(Protocol[CtxT, EventT, UserIdT]):
    """What a user's handle takes of `Nodes` (nodes.py): its parts, and the same helpers route
    uses. A protocol, so nodes.py imports this module and never the other way round."""

    _codec: NodeCodec[CtxT, EventT, UserIdT]
    _store: StateStore
    _turns: Turns[UserIdT]
    _notify: Notify
    _steps: NodeSteps[CtxT, EventT, UserIdT]

    def _duplicate(self, user_id: UserIdT, event_id: str) -> Outcome: ...

    def _unavailable(self, user_id: UserIdT, error: RedisError) -> StateUnavailableError: ...

    async def _commit_event(
        self,
        lease: Lease,
        node: AnyNode[CtxT, EventT, UserIdT],
        event_id: str,
        outbox: Outbox,
        before: Decoded[CtxT, EventT, UserIdT] | None,
    ) -> str: ...


class NodesUser(Generic[CtxT, EventT, UserIdT]):
    """One user's handle, for moving them or looking at their node from outside an event."""

    def __init__(self, nodes: UserSteps[CtxT, EventT, UserIdT], user_id: UserIdT) -> None:
        self._nodes = nodes
        self._user_id = user_id

    async def to(self, node: Node[CtxT, EventT, UserIdT, Any], *, event_id: str = "") -> bool:
        """Put the user on `node`, running its on_enter, under the same lock as routing.

        Pass the `event_id` of the update that asked for it (e.g. a /start command) and a
        re-delivery of that update does nothing: then this returns False.
        """
        nodes, user_id = self._nodes, self._user_id
        nodes._codec.key_of(node)
        outbox = Outbox()
        async with nodes._turns.turn(user_id, event_id) as lease:
            if lease.locked.duplicate:
                nodes._duplicate(user_id, event_id)
                return False
            async with nodes._turns.slot():
                current = load(lease, nodes._codec, nodes._notify, quiet=True)
                visit = current.visit + 1 if current else first_visit(lease)
                with collecting(outbox):
                    await nodes._steps.enter(node, user_id, visit=visit)
                await nodes._commit_event(lease, node, event_id, outbox, current)
            await outbox.flush(user_id)
        return True

    async def forget(self) -> None:
        """Delete the user's stored node, under their lock: their next event starts over."""
        async with self._nodes._turns.turn(self._user_id, ""):
            try:
                await self._nodes._store.forget(self._user_id)
            except RedisError as error:
                raise self._nodes._unavailable(self._user_id, error) from error

    async def get_node(self) -> Node[CtxT, EventT, UserIdT, Any] | None:
        """The user's current node, or None if they have none (or it can't be read)."""
        nodes, user_id = self._nodes, self._user_id
        try:
            raw = await nodes._store.read(user_id)
        except RedisError as error:
            raise nodes._unavailable(user_id, error) from error
        if raw is None:
            return None
        try:
            return nodes._codec.decode(raw).node
        except CorruptStateError as error:
            logger.warning(
                "stored state of user %s can't be read (%s); get_node() returns None",
                user_id,
                error.reason,
                extra={"user_id": user_id},
            )
            return None
