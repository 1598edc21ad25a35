"""What botnodes promises beyond 0.1.0: no lost updates, safe failures, recoverable state.

Everything runs against real redis-server processes; a second bot process is a real process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.backoff import NoBackoff
from redis.retry import Retry

from botnodes import LockTimeoutError, Node, StateUnavailableError, TransitionLostError

from ..conftest import RedisServer
from .botnodes_support import BadEnter, Cart, Ctx, Menu, Msg, make_nodes, stored_json

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BURST_WORKER = f"{__package__}.burst_worker"


async def cart_items(nodes: Any, user_id: int) -> list[str]:
    node = await nodes.user(user_id).get_node()
    assert isinstance(node, Cart), node
    return list(node._data.items)


# 1. No lost updates -----------------------------------------------------------------------


async def test_a_burst_of_50_events_for_one_user_keeps_every_item_in_order(
    redis_client: Redis, state_key: str
) -> None:
    nodes = make_nodes(redis_client, state_key)
    await nodes.user(1).to(Cart())
    await asyncio.gather(*(nodes.route(Msg(1, f"item{i}")) for i in range(50)))
    assert await cart_items(nodes, 1) == [f"item{i}" for i in range(50)]


@pytest.mark.ops
async def test_two_processes_bursting_one_user_lose_nothing(
    redis_client: Redis, redis_url: str, state_key: str
) -> None:
    nodes = make_nodes(redis_client, state_key)
    await nodes.user(1).to(Cart())
    workers = [
        subprocess.Popen(  # noqa: ASYNC220 - started once, waited for in a thread
            [sys.executable, "-m", BURST_WORKER, redis_url, state_key, "1", "25", label],
            cwd=PROJECT_ROOT,
        )
        for label in ("a", "b")
    ]
    try:
        deadline = time.monotonic() + 30
        while int(await redis_client.get(f"{state_key}:ready") or 0) < 2:
            assert time.monotonic() < deadline, "workers did not start"
            await asyncio.sleep(0.02)
        await redis_client.set(f"{state_key}:go", 1)
        assert [await asyncio.to_thread(w.wait, 60) for w in workers] == [0, 0]
    finally:
        for worker in workers:
            worker.kill()
    items = await cart_items(nodes, 1)
    assert sorted(items) == sorted([f"a{i}" for i in range(25)] + [f"b{i}" for i in range(25)])
    # Each process routes its own events in arrival order.
    assert [i for i in items if i[0] == "a"] == [f"a{i}" for i in range(25)]
    assert [i for i in items if i[0] == "b"] == [f"b{i}" for i in range(25)]


async def test_different_users_run_in_parallel(redis_client: Redis, state_key: str) -> None:
    ctx = Ctx(delay=0.05)
    nodes = make_nodes(redis_client, state_key, ctx)
    for user_id in range(10):
        await nodes.user(user_id).to(Cart())
    await asyncio.gather(*(nodes.route(Msg(user_id, "x")) for user_id in range(10)))
    assert ctx.max_running == 10


async def test_one_users_events_never_overlap(redis_client: Redis, state_key: str) -> None:
    ctx = Ctx(delay=0.01)
    nodes = make_nodes(redis_client, state_key, ctx)
    await nodes.user(1).to(Cart())
    await asyncio.gather(*(nodes.route(Msg(1, str(i))) for i in range(10)))
    assert ctx.max_running == 1


class CountingConnection(Connection):
    """A real connection that counts the requests it sends (one per round trip, no pipelines)."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


async def test_a_routed_event_costs_two_round_trips_and_one_release_after_its_replies(
    redis_url: str, state_key: str
) -> None:
    pool = BlockingConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    redis = Redis.from_pool(pool)
    try:
        nodes = make_nodes(redis, state_key)
        await nodes.user(1).to(Cart())
        await nodes.route(Msg(1, "warm-up"))  # loads the scripts once (SCRIPT LOAD)
        CountingConnection.sent = 0
        for i in range(20):  # the cart stays silently: no replies
            await nodes.route(Msg(1, f"item{i}", event_id=f"m{i}"))
        # Lock and read, then store (recording the event as handled) and release.
        assert CountingConnection.sent == 40
        # A new user too (the lookup in the 0.1.0 hash rides in the same script); the menu
        # replies, so the store keeps the lock until the reply is out and a third call
        # releases it: a user's replies leave in order even across processes.
        CountingConnection.sent = 0
        for user_id in range(100, 120):
            await nodes.route(Msg(user_id, "hi", event_id="m1"))
        assert CountingConnection.sent == 60
        # One process per bot (polling) keeps that order with its local queue: two calls.
        single = make_nodes(redis, state_key, lock_during_replies=False)
        CountingConnection.sent = 0
        for user_id in range(200, 220):
            await single.route(Msg(user_id, "hi", event_id="m1"))
        assert CountingConnection.sent == 40
    finally:
        await redis.aclose()


async def test_concurrent_users_share_round_trips(redis_url: str, state_key: str) -> None:
    pool = BlockingConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    redis = Redis.from_pool(pool)
    try:
        nodes = make_nodes(redis, state_key)
        await nodes.route(Msg(0, "warm-up"))
        CountingConnection.sent = 0
        await asyncio.gather(*(nodes.route(Msg(user_id, "hi")) for user_id in range(1, 101)))
        # The scripts of events that run at the same time travel in shared pipelines.
        assert CountingConnection.sent <= 20
        assert all([isinstance(await nodes.user(u).get_node(), Menu) for u in range(1, 101)])
    finally:
        await redis.aclose()


async def test_scripts_are_reloaded_when_redis_forgets_them(
    redis_client: Redis, state_key: str
) -> None:
    nodes = make_nodes(redis_client, state_key)
    await nodes.route(Msg(1, "hi"))
    await redis_client.script_flush()  # what a Redis restart without persistence does too
    await asyncio.gather(nodes.route(Msg(1, "cart")), nodes.route(Msg(2, "hi")))
    assert isinstance(await nodes.user(1).get_node(), Cart)
    assert isinstance(await nodes.user(2).get_node(), Menu)


async def test_scripts_retried_after_a_lost_reply_give_the_same_answer(
    redis_client: Redis, state_key: str
) -> None:
    # redis-py retries a command whose reply was lost to a connection error; both scripts
    # must then answer as they did the first time instead of failing the event.
    nodes = make_nodes(redis_client, state_key)
    store = nodes._store
    first = await store.try_lock_and_read(1, "00aa:1")
    assert first.taken
    assert (await store.try_lock_and_read(1, "00aa:1")).taken
    assert not (await store.try_lock_and_read(1, "00bb:2")).taken
    menu = '{"node_name":"menu"}'
    assert await store.write_and_unlock(1, "00aa:1", menu, read_digest=first.read_digest)
    assert await store.write_and_unlock(1, "00aa:1", menu, read_digest=first.read_digest)
    # A write that follows a read of what is no longer stored is refused.
    cart = '{"node_name":"cart","items":[]}'
    assert not await store.write_and_unlock(1, "00aa:1", cart, read_digest=first.read_digest)
    assert isinstance(await nodes.user(1).get_node(), Menu)


async def test_a_lock_left_by_a_dead_process_expires(redis_client: Redis, state_key: str) -> None:
    nodes = make_nodes(redis_client, state_key, lock_wait_timeout=5)
    await nodes.user(1).to(Cart())
    await redis_client.set(f"{state_key}:{{1}}:lock", "0123abcd:7", px=150)
    started = time.perf_counter()
    await nodes.route(Msg(1, "tea"))
    assert time.perf_counter() - started >= 0.12
    assert await cart_items(nodes, 1) == ["tea"]


async def test_lock_ttl_is_what_a_crashed_holder_leaves(
    redis_client: Redis, state_key: str
) -> None:
    nodes = make_nodes(redis_client, state_key, lock_ttl=1.5)
    await nodes.user(1).to(Cart())
    assert (await nodes._store.try_lock_and_read(1, "crashed-holder")).taken
    assert 1000 < await redis_client.pttl(f"{state_key}:{{1}}:lock") <= 1500


async def test_waiting_for_a_held_lock_is_bounded_and_logged(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = make_nodes(redis_client, state_key, lock_wait_timeout=0.3)
    await nodes.user(1).to(Cart())
    await redis_client.set(f"{state_key}:{{1}}:lock", "0123abcd:7", px=4_000)
    started = time.perf_counter()
    with pytest.raises(LockTimeoutError, match=r"lock of user 1 was not free within 0\.3s"):
        await nodes.route(Msg(1, "tea"))
    assert time.perf_counter() - started < 2
    assert "user 1: lock not acquired within 0.3s" in caplog.text
    with pytest.raises(LockTimeoutError):  # to() takes the same lock
        await nodes.user(1).to(Menu())
    await redis_client.delete(f"{state_key}:{{1}}:lock")
    assert await cart_items(nodes, 1) == []


async def test_a_handler_that_runs_past_lock_ttl_keeps_its_lock_and_nothing_is_lost(
    redis_client: Redis, state_key: str
) -> None:
    # The lock is extended every LOCK_TTL / 3, so a busy machine may stall this process for
    # up to 0.2 s before the lock would lapse.
    gate = asyncio.Event()
    slow = make_nodes(redis_client, state_key, Ctx(gate=gate), lock_ttl=0.3)
    fast = make_nodes(redis_client, state_key)  # another process
    await fast.user(1).to(Cart())
    slow_route = asyncio.create_task(slow.route(Msg(1, "first")))
    await asyncio.sleep(0.7)  # two lock TTLs would have passed: the lock was kept alive
    fast_route = asyncio.create_task(fast.route(Msg(1, "second")))
    await asyncio.sleep(0.1)  # time to try the lock: it waits for it
    assert not fast_route.done()
    gate.set()  # the slow handler ends
    await slow_route
    await fast_route
    assert await cart_items(fast, 1) == ["first", "second"]


async def test_a_commit_after_the_lock_was_lost_is_stored_if_nobody_wrote_since(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    gate = asyncio.Event()
    ctx = Ctx(gate=gate)
    nodes = make_nodes(redis_client, state_key, ctx)
    await nodes.user(1).to(Cart())
    route = asyncio.create_task(nodes.route(Msg(1, "tea")))
    async with asyncio.timeout(5):
        await ctx.at_gate.wait()  # the handler runs
    await redis_client.delete(f"{state_key}:{{1}}:lock")  # lost, e.g. to a Redis failover
    gate.set()
    await route
    assert await cart_items(nodes, 1) == ["tea"]
    assert "lock of user 1 expired before node 'cart' was stored; stored anyway" in caplog.text


async def test_a_commit_after_another_writer_stored_is_refused_and_reported(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    gate = asyncio.Event()
    slow_ctx = Ctx(gate=gate)
    slow = make_nodes(redis_client, state_key, slow_ctx)
    other = make_nodes(redis_client, state_key)  # another process
    await other.user(1).to(Cart())
    route = asyncio.create_task(slow.route(Msg(1, "stale")))
    async with asyncio.timeout(5):
        await slow_ctx.at_gate.wait()  # the handler runs
    await redis_client.delete(f"{state_key}:{{1}}:lock")  # lost, e.g. to a Redis failover
    await other.route(Msg(1, "fresh"))  # a genuinely concurrent writer commits first
    gate.set()
    with pytest.raises(TransitionLostError, match="another writer changed the state first"):
        await route
    assert await cart_items(other, 1) == ["fresh"]
    assert "state of user 1 changed since it was read" in caplog.text
    assert await redis_client.exists(f"{state_key}:{{1}}:lock") == 0


async def test_in_process_bookkeeping_does_not_grow_with_users(
    redis_client: Redis, state_key: str
) -> None:
    nodes = make_nodes(redis_client, state_key)
    await asyncio.gather(*(nodes.route(Msg(user_id, "hi")) for user_id in range(500)))
    assert nodes.busy_users == 0
    assert nodes.in_flight == 0
    assert nodes._locks._local._slots == {}
    assert nodes._locks._replying == set()
    assert nodes._locks._handed_over == {}


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
