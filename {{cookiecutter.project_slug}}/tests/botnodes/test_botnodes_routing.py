"""The routing contract of the botnodes README, against a real Redis server."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from botnodes import ConfigurationError, UnregisteredNodeError

from .botnodes_support import (
    SCAN_COUNT,
    Cart,
    Ctx,
    Menu,
    Msg,
    Unregistered,
    make_nodes,
    stored_json,
)


async def test_first_event_puts_a_new_user_on_the_start_node_without_on_event(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    await nodes.route(Msg(1, "cart"))  # would open the cart if on_event saw it
    assert ctx.texts(1) == ["menu"]
    assert isinstance(await nodes.user(1).get_node(), Menu)


async def test_returned_node_is_entered_and_stored(redis_client: Redis, state_key: str) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    await nodes.route(Msg(1, "hi"))
    await nodes.route(Msg(1, "cart"))
    assert ctx.texts(1) == ["menu", "cart: empty"]
    # "_n" counts the user's node visits: the start node's is the Redis clock in
    # microseconds when the user arrived (unique for all time), the cart's the next one.
    stored = await stored_json(redis_client, f"{state_key}:{{1}}")
    first_visit = stored.pop("_n") - 1
    assert stored == {"items": [], "node_name": "cart"}
    seconds, micros = await redis_client.time()
    assert 0 < seconds * 1_000_000 + micros - first_visit < 60_000_000


async def test_returning_none_keeps_the_node_and_stores_changed_data_without_on_enter(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    await nodes.user(1).to(Cart())
    await nodes.route(Msg(1, "tea"))
    await nodes.route(Msg(1, "cake"))
    assert ctx.texts(1) == ["cart: empty"]  # on_enter ran once, for to()
    node = await nodes.user(1).get_node()
    assert isinstance(node, Cart)
    assert node._data.items == ["tea", "cake"]


async def test_menu_stays_and_answers_when_on_event_returns_none(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    await nodes.route(Msg(5, "hi"))
    await nodes.route(Msg(5, "what"))
    assert ctx.texts(5) == ["menu", "menu got what"]


async def test_to_runs_on_enter_and_get_node_reads_it_back(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    assert await nodes.user(7).get_node() is None
    await nodes.user(7).to(Cart(["soup"]))
    assert ctx.texts(7) == ["cart: soup"]
    node = await nodes.user(7).get_node()
    assert isinstance(node, Cart)
    assert node._data.items == ["soup"]


async def test_users_are_independent(redis_client: Redis, state_key: str) -> None:
    nodes = make_nodes(redis_client, state_key)
    await nodes.user(1).to(Cart(["a"]))
    await nodes.user(2).to(Menu())
    await nodes.route(Msg(1, "b"))
    assert isinstance(await nodes.user(2).get_node(), Menu)
    node = await nodes.user(1).get_node()
    assert isinstance(node, Cart)
    assert node._data.items == ["a", "b"]


async def test_every_key_lives_under_the_property_name(redis_client: Redis, state_key: str) -> None:
    nodes = make_nodes(redis_client, state_key)
    for user_id in (1, 2, 3):
        await nodes.route(Msg(user_id, "hi"))
    scan = redis_client.scan_iter(match=f"{state_key}*", count=SCAN_COUNT)
    keys = sorted([key.decode() async for key in scan])
    assert keys == [f"{state_key}:{{1}}", f"{state_key}:{{2}}", f"{state_key}:{{3}}"]


async def test_string_user_ids_work(redis_client: Redis, state_key: str) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    await nodes.user("discord:42").to(Cart())  # type: ignore[arg-type]
    assert await redis_client.exists(f"{state_key}:{{discord:42}}") == 1


async def test_to_refuses_an_unregistered_node_before_touching_redis(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    with pytest.raises(UnregisteredNodeError):
        await nodes.user(1).to(Unregistered())
    assert ctx.sent == []
    assert await redis_client.exists(f"{state_key}:{{1}}", f"{state_key}:{{1}}:lock") == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"redis_property_name": ""}, "redis_property_name '' must be a non-empty string"),
        ({"redis_property_name": "bot{1}"}, "must not contain braces"),
        ({"lock_ttl": 0}, "lock_ttl=0 must be a positive number of seconds"),
        ({"lock_wait_timeout": -1}, "lock_wait_timeout=-1 must be a positive"),
        ({"state_ttl": float("inf")}, "state_ttl=inf must be a positive"),
    ],
    ids=["empty-name", "braces", "lock-ttl", "lock-wait", "state-ttl"],
)
def test_bad_options_are_refused(
    redis_client: Redis, options: dict[str, Any], message: str
) -> None:
    prefix = str(options.pop("redis_property_name", "ok"))
    with pytest.raises(ConfigurationError, match=message.replace("{", r"\{").replace("(", r"\(")):
        make_nodes(redis_client, prefix, **options)
