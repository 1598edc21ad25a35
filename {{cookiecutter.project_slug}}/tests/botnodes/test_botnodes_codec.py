"""The stored format and the registry checks, which need no Redis: they are pure functions."""

from __future__ import annotations

import enum
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, Field

from botnodes import ConfigurationError, CorruptStateError, Node, UnregisteredNodeError
from botnodes.codec import NodeCodec

from .botnodes_support import NODES, Cart, Ctx, Menu, Msg, Unregistered


class Size(enum.Enum):
    SMALL = "small"
    LARGE = "large"


class RichModel(BaseModel):
    when: datetime
    ref: uuid.UUID
    size: Size


class Rich(Node[Ctx, Msg, int, RichModel]):
    @classmethod
    def _get_model(cls) -> type[RichModel]:
        return RichModel

    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> None:
        return None


def codec(nodes: dict[str, Any] | None = None, **kwargs: Any) -> NodeCodec[Ctx, Msg, int]:
    return NodeCodec(
        nodes if nodes is not None else NODES, kwargs.pop("field", "node_name"), **kwargs
    )


def test_encode_is_model_json_plus_key() -> None:
    raw = codec().encode(Cart(["tea", "cake"]))
    assert json.loads(raw) == {"items": ["tea", "cake"], "node_name": "cart"}


def test_datetimes_uuids_and_enums_survive_a_round_trip() -> None:
    data = RichModel(when=datetime(2026, 1, 2, 3, 4, tzinfo=UTC), ref=uuid.uuid4(), size=Size.LARGE)
    node = Rich._from_model(data)
    subject = codec({"rich": Rich})
    decoded = subject.decode(subject.encode(node))
    assert decoded.key == "rich"
    assert decoded.node._data == data
    assert decoded.upgraded is None


def test_reads_botnodes_010_blobs() -> None:
    # botnodes 0.1.0 stored json.dumps({**model_dump(), discriminator: key}) with default spacing.
    decoded = codec().decode(json.dumps({"items": ["soup"], "node_name": "cart"}))
    assert isinstance(decoded.node, Cart)
    assert decoded.node._data.items == ["soup"]


def test_refuses_encoding_an_unregistered_node() -> None:
    with pytest.raises(UnregisteredNodeError, match="Unregistered is not in nodes_dict"):
        codec().encode(Unregistered())


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json{", "not valid UTF-8 JSON"),
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ('{"items": []}', "no string 'node_name' field"),
        ('{"node_name": "pizza"}', "node key 'pizza' is not registered"),
        (
            '{"node_name": "cart", "items": "tea"}',
            "data of node 'cart' (version 0) does not validate: items",
        ),
        ('{"node_name": "cart", "_v": "2"}', "schema version '2' of node 'cart' is not an integer"),
    ],
    ids=["garbage", "bad-utf8", "array", "no-key", "unknown-key", "invalid-data", "bad-version"],
)
def test_corrupt_values_raise_with_a_reason(raw: str | bytes, reason: str) -> None:
    with pytest.raises(CorruptStateError) as caught:
        codec().decode(raw)
    assert reason in caught.value.reason


class OldNameModel(BaseModel):
    dishes: list[str] = []


class Basket(Node[Ctx, Msg, int, OldNameModel]):
    """Version 1 called the field `items`; version 2 calls it `dishes`."""

    schema_version = 2

    @classmethod
    def _get_model(cls) -> type[OldNameModel]:
        return OldNameModel

    @classmethod
    def migrate(cls, data: dict[str, Any], from_version: int) -> dict[str, Any]:
        if from_version < 2:
            data = {"dishes": data.pop("items", [])}
        return data

    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> None:
        return None


def test_old_data_is_migrated_and_renamed_keys_follow_their_alias() -> None:
    subject = codec({"menu": Menu, "basket": Basket}, key_aliases={"cart": "basket"})
    decoded = subject.decode('{"node_name": "cart", "items": ["tea"]}')
    assert isinstance(decoded.node, Basket)
    assert decoded.node._data.dishes == ["tea"]
    assert decoded.upgraded == (
        "node key 'cart' renamed to 'basket'; node 'basket' data migrated from version 0 to 2"
    )
    # Written back with its version, so the next read doesn't migrate again.
    again = subject.decode(subject.encode(decoded.node))
    assert again.upgraded is None
    assert json.loads(subject.encode(decoded.node))["_v"] == 2


def test_a_failing_migration_is_a_corrupt_value() -> None:
    class Fragile(Basket):
        @classmethod
        def migrate(cls, data: dict[str, Any], from_version: int) -> dict[str, Any]:
            raise KeyError("dishes")

    with pytest.raises(CorruptStateError, match="migrating node 'fragile' from version 0 failed"):
        codec({"fragile": Fragile}).decode('{"node_name": "fragile"}')


class Clashing(BaseModel):
    node_name: str = "x"


class AliasClashing(BaseModel):
    name: str = Field(default="x", alias="node_name")


def _node_with(model: type[Any]) -> type[Node[Ctx, Msg, int, Any]]:
    class Custom(Node[Ctx, Msg, int, Any]):
        @classmethod
        def _get_model(cls) -> Any:
            return model

        async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> None:
            return None

    return Custom


@pytest.mark.parametrize(
    ("nodes", "options", "message"),
    [
        (
            {"a": _node_with(Clashing)},
            {},
            "has a field named 'node_name', which is the discriminator_field",
        ),
        ({"a": _node_with(AliasClashing)}, {}, "has a field named 'node_name'"),
        ({"a": Menu, "b": Menu}, {}, "Menu is registered twice, as 'a' and 'b'"),
        (
            {"a": _node_with(dict)},
            {},
            "_get_model() returned <class 'dict'>: it must return a pydantic",
        ),
        (
            {"a": str},
            {},
            "nodes_dict['a'] is <class 'str'>: it must be a subclass of botnodes.Node",
        ),
        ({}, {}, "nodes_dict is empty"),
        (NODES, {"key_aliases": {"menu": "cart"}}, "'menu' is also a registered key"),
        (
            NODES,
            {"key_aliases": {"old": "gone"}},
            "maps 'old' to 'gone', which is not a key of nodes_dict",
        ),
        (NODES, {"field": "_v"}, "discriminator_field '_v' is not allowed"),
    ],
    ids=[
        "field-clash",
        "alias-clash",
        "class-twice",
        "model-not-pydantic",
        "not-a-node",
        "empty",
        "alias-is-registered",
        "alias-to-nowhere",
        "reserved-discriminator",
    ],
)
def test_misuse_is_refused_with_a_clear_message(
    nodes: dict[str, Any], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        codec(nodes, **options)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
