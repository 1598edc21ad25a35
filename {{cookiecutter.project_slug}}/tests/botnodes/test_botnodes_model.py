"""A node names its data model once, in `Node[Ctx, Event, UserId, Model]`.

The README's explicit `_get_model` keeps working and wins; a declaration that could never be
stored fails when the class is defined, naming the class.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from botnodes import ConfigurationError, Node

from .botnodes_support import Cart, CartModel, Ctx, Empty, Menu, Msg, make_nodes

M = TypeVar("M", bound=BaseModel)
C = TypeVar("C")


class LeafModel(BaseModel):
    leaf: int = 0


class Special(CartModel):
    special: bool = True


class Stay(Node[Ctx, Msg, int, LeafModel]):
    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> None:
        return None


class Generic4(Node[Ctx, Msg, int, M]):
    """A generic node: its subclasses name the model."""

    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> None:
        return None


class GenericCtxAndModel(Node[C, Msg, int, M], Generic[C, M]):
    """Generic in more than the model, in another order than Node's parameters."""

    async def on_event(self, user_id: int, event: Msg, ctx: C) -> None:
        return None


class Explicit(Node[Ctx, Msg, int, CartModel]):
    """The README's way: the model named and returned by hand (here a narrower one)."""

    @classmethod
    def _get_model(cls) -> type[CartModel]:
        return Special

    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> None:
        return None


def test_the_model_is_inferred_from_the_type_argument() -> None:
    assert Menu._get_model() is Empty
    assert Cart._get_model() is CartModel
    assert Stay._get_model() is LeafModel


def test_an_explicit_get_model_wins_and_is_inherited() -> None:
    class Sub(Explicit):
        pass

    assert Explicit._get_model() is Special
    assert Sub._get_model() is Special


def test_an_explicit_get_model_may_keep_a_loose_type_argument() -> None:
    class Loose(Node[Ctx, Msg, int, Any]):
        @classmethod
        def _get_model(cls) -> Any:
            return LeafModel

        async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> None:
            return None

    assert Loose._get_model() is LeafModel


def test_a_subclass_of_a_node_keeps_its_model() -> None:
    class BigCart(Cart):
        pass

    class BiggerCart(BigCart):
        pass

    assert BigCart._get_model() is CartModel
    assert BiggerCart._get_model() is CartModel


def test_a_generic_node_gets_its_model_from_its_subclass() -> None:
    class Leaf(Generic4[LeafModel]):
        pass

    class Both(GenericCtxAndModel[Ctx, LeafModel]):
        pass

    class Below(Leaf):
        pass

    assert Leaf._get_model() is LeafModel
    assert Both._get_model() is LeafModel
    assert Below._get_model() is LeafModel


def test_a_node_without_a_model_says_so_when_asked_or_registered(
    redis_client: Redis, state_key: str
) -> None:
    with pytest.raises(TypeError, match=r"^Generic4 names no data model: give it as the last"):
        Generic4._get_model()
    with pytest.raises(
        ConfigurationError, match=r"^nodes_dict\['open'\] \(Generic4\) names no data model"
    ):
        make_nodes(redis_client, state_key, nodes_dict={"menu": Menu, "open": Generic4})


def test_a_model_named_by_a_string_fails_at_class_definition() -> None:
    with pytest.raises(TypeError) as caught:

        class Forward(Node[Ctx, Msg, int, "LeafModel"]):
            async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> None:
                return None

    message = str(caught.value)
    assert ".Forward names its model as the string 'LeafModel': pass the class" in message
    assert "\n" not in message


@pytest.mark.parametrize("argument", [dict, Any, int, list[LeafModel]])
def test_a_model_that_is_not_a_pydantic_model_fails_at_class_definition(argument: Any) -> None:
    with pytest.raises(TypeError) as caught:

        class Wrong(Node[Ctx, Msg, int, argument]):
            async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> None:
                return None

    message = str(caught.value)
    assert f".Wrong names {argument!r} as its model: it must be a pydantic BaseModel" in message
    assert "\n" not in message


def test_a_generic_node_given_a_non_model_fails_at_class_definition() -> None:
    with pytest.raises(TypeError, match=r"\.Odd names <class 'str'> as its model"):

        class Odd(GenericCtxAndModel[Ctx, str]):  # type: ignore[type-var]
            pass


async def test_inferred_models_store_and_load(redis_client: Redis, state_key: str) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    await nodes.route(Msg(1, "hi"))
    await nodes.route(Msg(1, "cart"))
    await nodes.route(Msg(1, "soup"))
    node = await nodes.user(1).get_node()
    assert isinstance(node, Cart)
    assert node._data == CartModel(items=["soup"])
