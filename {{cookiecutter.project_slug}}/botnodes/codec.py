"""Turning nodes into JSON and back: the stored format and everything that can go wrong with it.

A stored node is one JSON object: the node model's fields (`model_dump(mode="json")`, so
datetimes, UUIDs and enums survive), the registered key under `discriminator_field`, when the
node class has a non-zero `schema_version` that version under `"_v"`, and the user's visit
number under `"_n"` (see `Node.visit`), and its pending timers, if any, under `"_t"`
(see timers.py). pydantic never names a field with a leading
underscore, so neither can clash with a model field. Without them the format is exactly
botnodes 0.1.0's, which keeps old data readable.

Whatever bytes are stored, `decode` either returns a node or raises `CorruptStateError` with
a reason: never another exception, so no stored value can make routing fail.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic

from pydantic import BaseModel, ValidationError

from .errors import ConfigurationError, CorruptStateError, UnregisteredNodeError
from .node import NO_MODEL, CtxT, EventT, Node, UserIdT, declares_model
from .timers import PendingTimers

VERSION_FIELD = "_v"
VISIT_FIELD = "_n"
TIMERS_FIELD = "_t"

AnyNode = Node[Any, Any, Any, Any]


@dataclass(frozen=True, slots=True)
class Decoded(Generic[CtxT, EventT, UserIdT]):
    """A node read back from storage, with what had to be done to read it."""

    key: str
    node: Node[CtxT, EventT, UserIdT, Any]
    #: Human-readable note when the data was migrated or its key renamed, else None.
    upgraded: str | None = None
    #: The timers armed for this visit that have not fired yet (None: none).
    timers: PendingTimers | None = None

    @property
    def visit(self) -> int:
        return self.node.visit


class NodeCodec(Generic[CtxT, EventT, UserIdT]):
    """Encodes nodes of a fixed registry and decodes them, refusing a bad registry up front."""

    def __init__(
        self,
        nodes_dict: Mapping[str, type[Node[CtxT, EventT, UserIdT, Any]]],
        discriminator_field: str,
        key_aliases: Mapping[str, str] | None = None,
    ) -> None:
        if not discriminator_field or discriminator_field in (
            VERSION_FIELD,
            VISIT_FIELD,
            TIMERS_FIELD,
        ):
            raise ConfigurationError(
                f"discriminator_field {discriminator_field!r} is not allowed: "
                f"use a non-empty name other than {VERSION_FIELD!r}, {VISIT_FIELD!r} and "
                f"{TIMERS_FIELD!r}"
            )
        if not nodes_dict:
            raise ConfigurationError("nodes_dict is empty: register at least the start node")
        self._discriminator = discriminator_field
        self._class_by_key: dict[str, type[Node[CtxT, EventT, UserIdT, Any]]] = {}
        self._key_by_class: dict[type[AnyNode], str] = {}
        for key, node_class in nodes_dict.items():
            self._check_node_class(key, node_class)
            self._class_by_key[key] = node_class
            self._key_by_class[node_class] = key
        self._aliases = dict(key_aliases or {})
        for old_key, new_key in self._aliases.items():
            if old_key in self._class_by_key:
                raise ConfigurationError(
                    f"key_aliases entry {old_key!r} is also a registered key: "
                    "an alias must name a key that is no longer registered"
                )
            if new_key not in self._class_by_key:
                raise ConfigurationError(
                    f"key_aliases maps {old_key!r} to {new_key!r}, which is not a key of nodes_dict"
                )

    def _check_node_class(self, key: str, node_class: object) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"nodes_dict key {key!r} must be a non-empty string")
        if not (isinstance(node_class, type) and issubclass(node_class, Node)):
            raise ConfigurationError(
                f"nodes_dict[{key!r}] is {node_class!r}: it must be a subclass of botnodes.Node"
            )
        if inspect.isabstract(node_class):
            raise ConfigurationError(
                f"nodes_dict[{key!r}] ({node_class.__qualname__}) is abstract: implement on_event"
            )
        if node_class in self._key_by_class:
            raise ConfigurationError(
                f"{node_class.__qualname__} is registered twice, as "
                f"{self._key_by_class[node_class]!r} and {key!r}: a class needs exactly one key "
                "(use key_aliases to keep an old key readable)"
            )
        if not declares_model(node_class):
            raise ConfigurationError(f"nodes_dict[{key!r}] ({node_class.__qualname__}) {NO_MODEL}")
        model = node_class._get_model()
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigurationError(
                f"{node_class.__qualname__}._get_model() returned {model!r}: "
                "it must return a pydantic BaseModel subclass"
            )
        for name, field in model.model_fields.items():
            if self._discriminator in (name, field.alias, field.serialization_alias):
                raise ConfigurationError(
                    f"{model.__qualname__} (node {key!r}) has a field named "
                    f"{self._discriminator!r}, which is the discriminator_field: rename the field "
                    "or choose another discriminator_field"
                )

    def key_of(self, node: AnyNode) -> str:
        """Return the registered key of a node, refusing classes that could not be read back."""
        key = self._key_by_class.get(type(node))
        if key is None:
            raise UnregisteredNodeError(
                f"{type(node).__qualname__} is not in nodes_dict: register it under a stable key"
            )
        return key

    def encode(self, node: AnyNode, timers: PendingTimers | None = None) -> str:
        """Serialize a node with its key, schema version, visit and pending timers as JSON."""
        key = self.key_of(node)
        payload = node._data.model_dump(mode="json")
        payload[self._discriminator] = key
        version = type(node).schema_version
        if version:
            payload[VERSION_FIELD] = version
        if node.visit:
            payload[VISIT_FIELD] = node.visit
        if timers is not None and timers.due:
            payload[TIMERS_FIELD] = timers.to_json()
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        try:
            text.encode()
        except UnicodeEncodeError:
            # A lone surrogate (JSON and Telegram allow "\ud800"; UTF-8 does not): escape
            # everything instead, which reads back to the very same strings.
            text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
        return text

    def decode(self, raw: str | bytes) -> Decoded[CtxT, EventT, UserIdT]:
        """Rebuild a node from stored JSON, migrating old data; CorruptStateError if impossible."""
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise CorruptStateError("the stored value is not valid UTF-8 JSON") from None
        if not isinstance(payload, dict):
            raise CorruptStateError(
                f"the stored value is a JSON {type(payload).__name__}, not an object"
            )
        key = payload.pop(self._discriminator, None)
        if not isinstance(key, str):
            raise CorruptStateError(f"the stored value has no string {self._discriminator!r} field")
        notes: list[str] = []
        if key in self._aliases:
            notes.append(f"node key {key!r} renamed to {self._aliases[key]!r}")
            key = self._aliases[key]
        node_class = self._class_by_key.get(key)
        if node_class is None:
            raise CorruptStateError(f"node key {key!r} is not registered")
        version = payload.pop(VERSION_FIELD, 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise CorruptStateError(f"schema version {version!r} of node {key!r} is not an integer")
        visit = payload.pop(VISIT_FIELD, 0)
        if not isinstance(visit, int) or isinstance(visit, bool) or visit < 0:
            raise CorruptStateError(f"visit {visit!r} of node {key!r} is not a whole number")
        timers = _pop_timers(payload, key)
        if version < node_class.schema_version:
            try:
                payload = node_class.migrate(payload, version)
            except Exception as error:  # a migration is user code: any failure means a reset
                raise CorruptStateError(
                    f"migrating node {key!r} from version {version} failed: {error!r}"
                ) from error
            notes.append(
                f"node {key!r} data migrated from version {version} to {node_class.schema_version}"
            )
        try:
            data = node_class._get_model().model_validate(payload)
        except RecursionError:
            raise CorruptStateError(f"data of node {key!r} is nested too deeply") from None
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(root)"
            raise CorruptStateError(
                f"data of node {key!r} (version {version}) does not validate: "
                f"{where}: {first['msg']} ({error.error_count()} error(s))"
            ) from None
        node = node_class._from_model(data)
        node.visit = visit
        return Decoded(key=key, node=node, upgraded="; ".join(notes) or None, timers=timers)


def _pop_timers(payload: dict[str, Any], key: str) -> PendingTimers | None:
    """Take the pending timers out of a stored payload; CorruptStateError if malformed."""
    if TIMERS_FIELD not in payload:
        return None
    try:
        return PendingTimers.from_json(payload.pop(TIMERS_FIELD))
    except ValueError as error:
        raise CorruptStateError(f"timers of node {key!r} can't be read: {error}") from None
