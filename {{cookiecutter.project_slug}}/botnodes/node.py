"""The `Node` base class: one conversation step of one user."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel

CtxT = TypeVar("CtxT")
EventT = TypeVar("EventT")
UserIdT = TypeVar("UserIdT", bound=int | str)
ModelT = TypeVar("ModelT", bound=BaseModel)


class Node(ABC, Generic[CtxT, EventT, UserIdT, ModelT]):
    """A step of a conversation; the user stays on it until `on_event` returns another node.

    Only `_data` (an instance of the model from `_get_model`) is stored between events.
    A stored node is rebuilt without calling `__init__`, so any other attribute set there
    exists only until the node is saved: use it for values `on_enter` needs right away.
    """

    #: Bump when the model changes incompatibly and implement `migrate` for older data.
    schema_version: ClassVar[int] = 0

    #: A node where a conversation may end (it leads nowhere): the flow check allows it.
    final: ClassVar[bool] = False

    #: For the flow diagram: each timeout name this node may return from `timeouts`, and
    #: where its duration comes from (a setting's name), e.g. `{"expiry": "CART_EXPIRES_AFTER"}`.
    timeout_labels: ClassVar[Mapping[str, str]] = {}

    _data: ModelT

    #: Which visit of this user to a node this is: botnodes counts up every time the user
    #: enters a node (also re-entering the same class) and stores the number with the data.
    #: It is set before `on_enter` runs, so a node can put it in its buttons' callback data;
    #: a press carrying another number comes from an old message (see `Nodes(event_visit=)`).
    #: It also makes a stable idempotency key for an effect: `f"{user_id}:{self.visit}"` is
    #: the same if the same event is handled again after a crash, and new on the next visit.
    visit: int = 0

    @classmethod
    @abstractmethod
    def _get_model(cls) -> type[ModelT]:
        """Return the pydantic model that is stored in Redis while a user is on this node."""

    @classmethod
    def migrate(cls, data: dict[str, Any], from_version: int) -> dict[str, Any]:
        """Upgrade stored data written when `schema_version` was `from_version`.

        Called before validation whenever the stored version is older than the class's,
        so a deploy that changes a model upgrades users instead of resetting them.
        The default keeps the data as it is.
        """
        return data

    @classmethod
    def _from_model(cls, data: ModelT) -> Self:
        """Rebuild a stored node from its data without running `__init__`."""
        node = cls.__new__(cls)
        node._data = data
        return node

    async def on_enter(self, user_id: UserIdT, ctx: CtxT) -> None:
        """Run when a user arrives on this node (a transition or `Nodes.user().to()`)."""

    @abstractmethod
    async def on_event(
        self, user_id: UserIdT, event: EventT, ctx: CtxT
    ) -> Node[CtxT, EventT, UserIdT, Any] | None:
        """Handle an event of a user on this node.

        Return the next node (its `on_enter` runs, then it is stored), or `None` to stay:
        then whatever was changed in `self._data` is stored and `on_enter` does not run.
        """

    def timeouts(self, ctx: CtxT) -> Mapping[str, float]:
        """The timers this node wants now: name -> seconds after the user's last event on it.

        Asked after every stored step that leaves the user on this node; a value of 0 or
        less (or a name left out) means no such timer. Each event for the user replaces the
        timers, leaving the node drops them. After a timer fired and the user stayed, it is
        asked again (still counting from the last event): a timer whose time already passed
        is not armed again, so a node that asks again and again returns growing durations.
        """
        return {}

    async def on_timeout(
        self, user_id: UserIdT, name: str, ctx: CtxT
    ) -> Node[CtxT, EventT, UserIdT, Any] | None:
        """Handle the timer `name` of this visit falling due; it runs like an event.

        Return the next node or `None` to stay (changes to `self._data` are stored); reply
        through `after_commit` as in `on_event`. Annotate the return with the nodes it may
        return, as for `on_event`, so the flow diagram shows them.
        """
        return None
