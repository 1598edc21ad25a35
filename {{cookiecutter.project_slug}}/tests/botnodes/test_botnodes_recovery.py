"""What botnodes promises when things go wrong: failures keep state, bad stored state, the
0.1.0 upgrade, Redis outages, idle expiry, graceful shutdown, and one log line per step.

Everything runs against real redis-server processes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from botnodes import Node, StateUnavailableError

from ..conftest import RedisServer
from .botnodes_support import BadEnter, Cart, Ctx, Menu, Msg, make_nodes, stored_json

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BURST_WORKER = f"{__package__}.burst_worker"


async def cart_items(nodes: Any, user_id: int) -> list[str]:
    node = await nodes.user(user_id).get_node()
    assert isinstance(node, Cart), node
    return list(node._data.items)


# 2. Failures don't corrupt state -----------------------------------------------------------


async def test_on_event_exception_keeps_node_and_data_and_logs_user_and_key(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = make_nodes(redis_client, state_key)
    await nodes.user(1).to(Cart(["tea"]))
    before = await redis_client.get(f"{state_key}:{{1}}")
    await nodes.route(Msg(1, "boom"))  # appends to _data, then raises
    assert await redis_client.get(f"{state_key}:{{1}}") == before
    record = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert record.getMessage() == (
        "on_event of node 'cart' failed for user 1; user stays on it, data unchanged"
    )
    assert record.exc_info is not None
    assert (record.user_id, record.node) == (1, "cart")  # type: ignore[attr-defined]
    await nodes.route(Msg(1, "cake"))  # and the bot keeps serving
    assert await cart_items(nodes, 1) == ["tea", "cake"]
    assert await redis_client.exists(f"{state_key}:{{1}}:lock") == 0


async def test_on_enter_exception_after_a_transition_keeps_the_transition(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = make_nodes(redis_client, state_key)
    await nodes.user(1).to(Menu())
    await nodes.route(Msg(1, "bad-enter"))
    assert isinstance(await nodes.user(1).get_node(), BadEnter)
    assert "on_enter of node 'bad_enter' failed for user 1; the user is stored on it anyway" in (
        caplog.text
    )
    assert await redis_client.exists(f"{state_key}:{{1}}:lock") == 0


async def test_returning_an_unregistered_node_is_an_on_event_failure(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = make_nodes(redis_client, state_key)
    await nodes.user(1).to(Menu())
    await nodes.route(Msg(1, "stray"))
    assert isinstance(await nodes.user(1).get_node(), Menu)
    assert "Unregistered is not in nodes_dict" in caplog.text


# 3. Bad stored state never strands a user --------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        ("{not json", "the stored value is not valid UTF-8 JSON"),
        ('{"node_name": "removed_in_deploy"}', "node key 'removed_in_deploy' is not registered"),
        ('{"node_name": "cart", "dishes": "x", "items": 5}', "data of node 'cart' (version 0)"),
    ],
    ids=["not-json", "unregistered-key", "invalid-data"],
)
async def test_unreadable_state_resets_only_that_user_to_the_start_node(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture, stored: str, reason: str
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    await nodes.user(2).to(Cart(["keep"]))
    await redis_client.set(f"{state_key}:{{1}}", stored)
    await nodes.route(Msg(1, "cart"))
    assert ctx.texts(1) == ["menu"]  # the start node's on_enter, not on_event
    assert isinstance(await nodes.user(1).get_node(), Menu)
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.getMessage().startswith("resetting user 1 to the start node: ")
    assert reason in warning.getMessage()
    assert await cart_items(nodes, 2) == ["keep"]


async def test_old_data_is_migrated_not_reset(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    class DishesModel(BaseModel):
        dishes: list[str] = []

    class Basket(Node[Ctx, Msg, int, DishesModel]):
        schema_version = 1

        @classmethod
        def migrate(cls, data: dict[str, Any], from_version: int) -> dict[str, Any]:
            return {"dishes": data.get("items", [])}

        async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> None:
            self._data.dishes.append(event.text)

    ctx = Ctx()
    nodes = make_nodes(
        redis_client,
        state_key,
        ctx,
        nodes_dict={"menu": Menu, "basket": Basket},
        key_aliases={"cart": "basket"},
    )
    await redis_client.set(f"{state_key}:{{1}}", '{"items": ["tea"], "node_name": "cart"}')
    await nodes.route(Msg(1, "cake"))
    assert ctx.texts(1) == []  # no reset greeting
    stored = await stored_json(redis_client, f"{state_key}:{{1}}")
    assert stored == {"dishes": ["tea", "cake"], "node_name": "basket", "_v": 1}
    assert "upgraded stored state of user 1: node key 'cart' renamed to 'basket'" in caplog.text


# 4. Upgrade from botnodes 0.1.0 -------------------------------------------------------------


async def test_users_in_the_010_hash_are_moved_on_first_touch(
    redis_client: Redis, state_key: str
) -> None:
    # botnodes 0.1.0: HSET <property name> <user id> json.dumps({**model, discriminator: key})
    await redis_client.hset(
        state_key,
        mapping={
            "1": json.dumps({"items": ["tea"], "node_name": "cart"}),
            "2": json.dumps({"items": ["soup"], "node_name": "cart"}),
        },
    )
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    assert await cart_items(nodes, 2) == ["soup"]  # readable before it moves
    await nodes.route(Msg(1, "cake"))
    assert ctx.texts(1) == []  # continued on their node, not reset
    assert await cart_items(nodes, 1) == ["tea", "cake"]
    assert (await stored_json(redis_client, f"{state_key}:{{1}}"))["items"] == ["tea", "cake"]
    assert await redis_client.hkeys(state_key) == [b"2"]  # moved out; user 2 untouched


async def test_to_drops_a_stale_010_entry(redis_client: Redis, state_key: str) -> None:
    await redis_client.hset(state_key, "1", json.dumps({"items": ["old"], "node_name": "cart"}))
    nodes = make_nodes(redis_client, state_key)
    await nodes.user(1).to(Menu())
    assert await redis_client.hexists(state_key, "1") == 0
    assert isinstance(await nodes.user(1).get_node(), Menu)


# 5. Redis outages ------------------------------------------------------------------------


async def test_redis_outage_fails_the_event_and_service_resumes(
    start_redis: Any, state_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    server: RedisServer = start_redis()
    redis = Redis.from_url(
        server.url,
        socket_timeout=1,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 1),
    )
    try:
        nodes = make_nodes(redis, state_key)
        await nodes.route(Msg(1, "hi"))
        server.stop()
        with pytest.raises(StateUnavailableError, match="state of user 1 is unavailable"):
            await nodes.route(Msg(1, "cart"))
        assert "Redis unavailable for user 1" in caplog.text
        assert nodes.in_flight == 0
        assert nodes.busy_users == 0
        server.start()  # same port, empty (no persistence in tests)
        await nodes.route(Msg(1, "hi"))
        await nodes.route(Msg(1, "cart"))
        assert isinstance(await nodes.user(1).get_node(), Cart)
    finally:
        await redis.aclose()


# 6. Idle expiry --------------------------------------------------------------------------


async def test_state_ttl_slides_on_every_event_then_the_user_starts_over(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx, state_ttl=0.7)
    await nodes.route(Msg(1, "hi"))
    await nodes.route(Msg(1, "cart"))
    key = f"{state_key}:{{1}}"
    assert 0 < await redis_client.pttl(key) <= 700
    for _ in range(3):  # 0.9 s of activity in all: longer than the TTL, kept alive by events
        await asyncio.sleep(0.3)
        await nodes.route(Msg(1, "tea"))
    assert await cart_items(nodes, 1) == ["tea"] * 3
    await asyncio.sleep(0.8)  # past the TTL since the last event, however late the wake-up
    assert await redis_client.exists(key) == 0
    await nodes.route(Msg(1, "cake"))
    assert ctx.texts(1)[-1] == "menu"  # started over


async def test_without_state_ttl_nothing_expires(redis_client: Redis, state_key: str) -> None:
    nodes = make_nodes(redis_client, state_key)
    await nodes.route(Msg(1, "hi"))
    assert await redis_client.pttl(f"{state_key}:{{1}}") == -1


# 7. Graceful shutdown --------------------------------------------------------------------


async def test_drain_waits_for_in_flight_events(redis_client: Redis, state_key: str) -> None:
    gate = asyncio.Event()
    ctx = Ctx(gate=gate)
    nodes = make_nodes(redis_client, state_key, ctx)
    await nodes.user(1).to(Cart())
    assert await nodes.drain(0.1)  # idle: returns at once
    route = asyncio.create_task(nodes.route(Msg(1, "tea")))
    async with asyncio.timeout(5):
        await ctx.at_gate.wait()
    assert nodes.in_flight == 1
    assert not await nodes.drain(0.05)
    asyncio.get_running_loop().call_later(0.1, gate.set)  # the handler ends while drain waits
    assert await nodes.drain(5)
    assert route.done()
    assert await cart_items(nodes, 1) == ["tea"]


# 10. Observability -----------------------------------------------------------------------


async def test_one_debug_line_per_transition_with_its_figures(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="botnodes")
    nodes = make_nodes(redis_client, state_key)
    await nodes.route(Msg(1, "hi"))
    await nodes.route(Msg(1, "cart"))
    lines = [r for r in caplog.records if r.getMessage().startswith("transition ")]
    assert len(lines) == 2
    assert lines[1].getMessage().startswith("transition user=1 from=menu to=cart duration_ms=")
    assert (lines[0].from_node, lines[0].to_node) == (None, "menu")  # type: ignore[attr-defined]
    assert lines[1].duration_ms >= lines[1].lock_wait_ms >= 0  # type: ignore[attr-defined]
