"""The flow of a bot, read from its code: which node can lead to which.

A node declares where it can go in the return annotation of `on_event`, where the transition
is made, so there is no second list to keep in sync:

    async def on_event(self, user_id, event, ctx) -> hungry.Hungry | hold.Hold | Start | None:

`None` means "stays on this node". A node's `on_timeout` declares where its timers lead the
same way; the diagram labels those edges with the node's `timeout_labels` (the settings the
durations come from). A broad annotation (`Node[...]`, a `NextNode` alias of it,
or none) declares nothing, and is reported as such rather than guessed.

From the declarations `FlowGraph` checks the registry (every target registered, every node
reachable from the start node, no dead end but a node marked `final`) and draws the flow as a
Mermaid `stateDiagram-v2`, which GitHub renders in a README.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError
from .node import Node

AnyNodeClass = type[Node[Any, Any, Any, Any]]


@dataclass(frozen=True, slots=True)
class Declared:
    """What one node's `on_event` annotation says: the classes it returns, and whether None."""

    targets: frozenset[AnyNodeClass]
    stays: bool


def declared_transitions(node_class: AnyNodeClass, hook: str = "on_event") -> Declared | None:
    """The transitions `node_class.<hook>` declares, or None if it declares none."""
    function = getattr(node_class, hook)
    try:
        hints = typing.get_type_hints(function, function.__globals__)
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
    for member in members:
        if member is type(None):
            stays = True
        elif isinstance(member, type) and issubclass(member, Node):
            targets.add(member)
        else:  # Node[...] itself, Any, ...: says "some node", which is no declaration
            return None
    return Declared(frozenset(targets), stays)


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
        labels = ", ".join(self._class_of(key).timeout_labels.values()) or "timeout"
        targets = sorted(self.key(target) for target in declared.targets)
        if declared.stays and key not in targets:
            targets.insert(0, key)
        return [f"    {key} --> {target} : after {labels}" for target in targets]

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
