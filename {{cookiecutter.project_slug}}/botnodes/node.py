"""The `Node` base class: one conversation step of one user."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, ForwardRef, Generic, Self, TypeVar, cast, get_args, get_origin

from pydantic import BaseModel

CtxT = TypeVar("CtxT")
EventT = TypeVar("EventT")
UserIdT = TypeVar("UserIdT", bound=int | str)
ModelT = TypeVar("ModelT", bound=BaseModel)

#: Said by `_get_model` and by the registry check alike, so both name the same two fixes.
NO_MODEL = (
    "names no data model: give it as the last type argument, "
    "Node[Ctx, Event, UserId, Model], or override _get_model"
)


class Node(ABC, Generic[CtxT, EventT, UserIdT, ModelT]):
    """A step of a conversation; the user stays on it until `on_event` returns another node.

    Only `_data` (an instance of the model from `_get_model`) is stored between events.
    A stored node is rebuilt without calling `__init__`, so any other attribute set there
    exists only until the node is saved: use it for values `on_enter` needs right away.

    The model is named once, as the last type argument: `class Hungry(Node[Ctx, Event,
    UserId, HungryModel])`. A subclass of a node keeps its model; a generic node
    (`Node[Ctx, Event, UserId, ModelT]`) names it in its subclasses (`Base[MyModel]`). An
    explicit `_get_model` (as in the botnodes README) still wins over the type argument.
    A model given as a string, or a type argument that is not a pydantic model, is a
    TypeError when the class is defined, since that can never be stored.
    """

    #: The model type argument as this class resolves it (a TypeVar while still generic).
    _model_argument: ClassVar[object] = None
    #: The model `_get_model` returns by default; None until a subclass names one.
    _declared_model: ClassVar[type[BaseModel] | None] = None

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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Resolved once, when the class is defined, so a declaration that can never be stored
        # fails at import (the deploy) rather than on the first user who reaches the node.
        super().__init_subclass__(**kwargs)
        cls._model_argument = _model_argument(cls)
        if _explicit_get_model(cls) or isinstance(cls._model_argument, TypeVar | None):
            return  # a hand-written _get_model wins; a generic node leaves it to subclasses
        cls._declared_model = _checked_model(cls, cls._model_argument)

    @classmethod
    def _get_model(cls) -> type[ModelT]:
        """Return the pydantic model that is stored in Redis while a user is on this node.

        By default, the model named as the last type argument of `Node[...]`.
        """
        if cls._declared_model is None:
            raise TypeError(f"{cls.__qualname__} {NO_MODEL}")
        return cast("type[ModelT]", cls._declared_model)

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


def declares_model(node_class: type[Node[Any, Any, Any, Any]]) -> bool:
    """Whether `_get_model` of the class can answer (a named model or an explicit override)."""
    return node_class._declared_model is not None or _explicit_get_model(node_class)


def _explicit_get_model(cls: type) -> bool:
    """A `_get_model` written by hand in the class or a base below Node: it wins."""
    return any("_get_model" in vars(base) for base in cls.__mro__ if base is not Node)


def _model_argument(cls: type) -> object:
    """The model type argument of the nearest generic Node base, resolved for this class.

    `class Leaf(Base[LeafModel])`, where `Base` is `Node[..., ModelT]`, resolves `ModelT` in
    `Base` to `LeafModel`; a class without a parametrised base keeps its parent's argument.
    """
    for base in vars(cls).get("__orig_bases__", ()):
        origin = get_origin(base)
        if not (isinstance(origin, type) and issubclass(origin, Node)):
            continue
        arguments = get_args(base)
        if origin is Node:
            return arguments[3]
        inner = origin._model_argument
        if isinstance(inner, TypeVar):
            return dict(zip(getattr(origin, "__parameters__", ()), arguments, strict=False)).get(
                inner, inner
            )
        return inner
    return getattr(cls, "_model_argument", None)


def _checked_model(cls: type, argument: object) -> type[BaseModel]:
    if isinstance(argument, str | ForwardRef):
        name = argument if isinstance(argument, str) else argument.__forward_arg__
        raise TypeError(
            f"{cls.__qualname__} names its model as the string {name!r}: "
            "pass the class itself, Node[Ctx, Event, UserId, Model]"
        )
    if not (isinstance(argument, type) and issubclass(argument, BaseModel)):
        raise TypeError(
            f"{cls.__qualname__} names {argument!r} as its model: "
            "it must be a pydantic BaseModel subclass (or override _get_model)"
        )
    return argument
