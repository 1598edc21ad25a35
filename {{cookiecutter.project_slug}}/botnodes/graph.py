"""The flow of a bot, read from its code: which node can lead to which.

A node declares where it can go in the return annotation of `on_event`, where the transition
is made, so there is no second list to keep in sync:

    async def on_event(self, user_id, event, ctx) -> hungry.Hungry | hold.Hold | Start | None:

`None` means "stays on this node". A node's `on_timeout` declares where its timers lead the
same way; the diagram labels those edges with the node's `timeout_labels` (the settings the
durations come from). A node with several timers says which one leads where by marking each
member with `ByTimer` (`typing.Annotated`, which type checkers read as the bare type):

    async def on_timeout(
        self, user_id, name, ctx
    ) -> Annotated[start.Start, ByTimer("expiry")] | Annotated[None, ByTimer("reminder")]:

and each edge gets its own timer's label; an unmarked member is where any of its timers may
lead. A broad annotation (`Node[...]`, a `NextNode` alias of it, or none) declares nothing,
and is reported as such rather than guessed.

From the declarations `FlowGraph` checks the registry (every target registered, every node
reachable from the start node, no dead end but a node marked `final`) and draws the flow as a
Mermaid `stateDiagram-v2`, which GitHub renders in a README.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError
from .node import Node

AnyNodeClass = type[Node[Any, Any, Any, Any]]


class ByTimer:
    """Marks a member of `on_timeout`'s return annotation with the timers that return it.

    `Annotated[start.Start, ByTimer("expiry")]`: the timer named `expiry` leads to `Start`.
    Only the flow diagram reads it, to label each timeout edge with its own timer's setting.
    """

    __slots__ = ("names",)

    def __init__(self, *names: str) -> None:
        if not names:
            raise ConfigurationError("ByTimer() needs the name of at least one timer")
        self.names = frozenset(names)

    def __repr__(self) -> str:
        return f"ByTimer({', '.join(map(repr, sorted(self.names)))})"


#: The timers behind a declared target: `None` for an unmarked member, i.e. any of them.
Timers = frozenset[str] | None


@dataclass(frozen=True, slots=True)
class Declared:
    """What one node's `on_event` annotation says: the classes it returns, and whether None.

    For `on_timeout`, `by_timer` says which timers lead to each target class (to `None` for
    staying), as `ByTimer` marks them; None there means any of the node's timers.
    """

    targets: frozenset[AnyNodeClass]
    stays: bool
    by_timer: Mapping[AnyNodeClass | None, Timers] = field(default_factory=dict)


def declared_transitions(node_class: AnyNodeClass, hook: str = "on_event") -> Declared | None:
    """The transitions `node_class.<hook>` declares, or None if it declares none."""
    function = getattr(node_class, hook)
    try:
        hints = typing.get_type_hints(function, function.__globals__, include_extras=True)
    except Exception as error:  # an annotation naming something that doesn't exist
        raise ConfigurationError(
            f"the return annotation of {node_class.__qualname__}.{hook} can't be read: {error}"
        ) from error
    annotation = hints.get("return")
    if annotation is None:
        return None
    members = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    targets: set[AnyNodeClass] = set()
    stays = False
    by_timer: dict[AnyNodeClass | None, Timers] = {}
    for annotated in members:
        member, timers = _timers_of(annotated)
        if member is type(None):
            stays = True
            by_timer[None] = _union(by_timer, None, timers)
        elif isinstance(member, type) and issubclass(member, Node):
            targets.add(member)
            by_timer[member] = _union(by_timer, member, timers)
        else:  # Node[...] itself, Any, ...: says "some node", which is no declaration
            return None
    return Declared(frozenset(targets), stays, by_timer)


def _timers_of(annotated: Any) -> tuple[Any, Timers]:
    """A union member without its `Annotated` wrapper, and the timers `ByTimer` names there."""
    if typing.get_origin(annotated) is not typing.Annotated:
        return annotated, None
    member, *extras = typing.get_args(annotated)
    marks = [extra for extra in extras if isinstance(extra, ByTimer)]
    if not marks:
        return member, None
    return member, frozenset(name for mark in marks for name in mark.names)


def _union(by_target: Mapping[Any, Timers], target: Any, timers: Timers) -> Timers:
    """The timers seen for `target` joined with `timers`; None (any timer) absorbs the rest."""
    if timers is None or (target in by_target and by_target[target] is None):
        return None
    return (by_target.get(target) or frozenset()) | timers


def _label(labels: Mapping[str, str], timers: Timers) -> str:
    """The settings behind `timers` (all of the node's for None), in `timeout_labels` order."""
    if timers is None:
        names = list(labels.values())
    else:
        names = [label for name, label in labels.items() if name in timers]
        names += sorted(timers - labels.keys())
    return ", ".join(dict.fromkeys(names)) or "timeout"


class FlowGraph:
    """The declared flow between the nodes of a registry."""

    def __init__(
        self,
        nodes_dict: Mapping[str, AnyNodeClass],
        start_node: AnyNodeClass,
    ) -> None:
        self._key_by_class = {node_class: key for key, node_class in nodes_dict.items()}
        self._start = start_node
        self.declared: dict[str, Declared | None] = {
            key: declared_transitions(node_class) for key, node_class in nodes_dict.items()
        }
        #: Where the timers of the nodes that handle timeouts lead (`on_timeout`).
        self.timeouts: dict[str, Declared | None] = {
            key: declared_transitions(node_class, "on_timeout")
            for key, node_class in nodes_dict.items()
            if node_class.on_timeout is not Node.on_timeout
        }

    def key(self, node_class: AnyNodeClass) -> str:
        return self._key_by_class.get(node_class, node_class.__qualname__)

    def problems(self) -> list[str]:
        """Every rule the flow breaks, one line each (empty when it is sound)."""
        found: list[str] = []
        if self._start not in self._key_by_class:
            found.append(f"the start node {self._start.__qualname__} is not in nodes_dict")
        for key, declared in self.declared.items():
            if declared is None:
                found.append(
                    f"node {key!r} declares no transitions: annotate the return of its on_event "
                    "with the nodes it returns, e.g. `-> start.Start | None`"
                )
                continue
            for target in sorted(declared.targets, key=lambda t: t.__qualname__):
                if target not in self._key_by_class:
                    found.append(
                        f"node {key!r} may return {target.__qualname__}, which is not in "
                        "nodes_dict: register it"
                    )
            leaves = declared.targets - {self._class_of(key)}
            if not leaves and not getattr(self._class_of(key), "final", False):
                found.append(
                    f"node {key!r} is a dead end (it leads to no other node): add a transition "
                    "or mark it `final: ClassVar[bool] = True`"
                )
        if not found:
            reachable = self._reachable()
            for key in self.declared:
                if key not in reachable:
                    name = self._class_of(key).__qualname__
                    found.append(
                        f"node {key!r} can't be reached from the start node: add {name} to the "
                        "return annotation of the on_event of a node that leads there, e.g. "
                        f"`{self._start.__qualname__}.on_event(...) -> ... | {name}`"
                    )
        return found

    def check(self) -> None:
        """Raise ConfigurationError naming the first broken rule."""
        problems = self.problems()
        if problems:
            raise ConfigurationError(problems[0])

    def allows(self, from_key: str, returned: AnyNodeClass) -> bool:
        """Whether node `from_key` declared that it may return a node of class `returned`."""
        declared = self.declared.get(from_key)
        return declared is None or returned in declared.targets

    def mermaid(self) -> str:
        """The flow as a Mermaid `stateDiagram-v2`; `stays` labels a declared `None`."""
        lines = ["stateDiagram-v2", f"    [*] --> {self.key(self._start)}"]
        for key, declared in self.declared.items():
            if declared is None:
                lines.append(f"    note right of {key} : transitions not declared")
                continue
            targets = sorted(self.key(target) for target in declared.targets)
            for target in targets:
                label = " : stays" if target == key and declared.stays else ""
                lines.append(f"    {key} --> {target}{label}")
            if declared.stays and key not in targets:
                lines.append(f"    {key} --> {key} : stays")
            if getattr(self._class_of(key), "final", False):
                lines.append(f"    {key} --> [*]")
            lines.extend(self._timeout_lines(key))
        return "\n".join(lines) + "\n"

    def _timeout_lines(self, key: str) -> list[str]:
        """The edges of a node's timers, labelled with where their durations come from."""
        if key not in self.timeouts:
            return []
        declared = self.timeouts[key]
        if declared is None:
            return [f"    note right of {key} : timeout transitions not declared"]
        edges: dict[str, Timers] = {}
        if declared.stays:
            edges[key] = declared.by_timer.get(None)
        for target in sorted(declared.targets, key=self.key):
            edges[self.key(target)] = _union(edges, self.key(target), declared.by_timer.get(target))
        labels = self._class_of(key).timeout_labels
        return [
            f"    {key} --> {target} : after {_label(labels, timers)}"
            for target, timers in edges.items()
        ]

    def _class_of(self, key: str) -> AnyNodeClass:
        return next(cls for cls, k in self._key_by_class.items() if k == key)

    def _reachable(self) -> set[str]:
        seen = {self.key(self._start)}
        todo = [self.key(self._start)]
        while todo:
            current = todo.pop()
            declared = self.declared.get(current)
            by_timer = self.timeouts.get(current)
            for target in (declared.targets if declared else set()) | (
                by_timer.targets if by_timer else set()
            ):
                key = self.key(target)
                if key not in seen:
                    seen.add(key)
                    todo.append(key)
        return seen
