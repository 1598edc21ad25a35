"""What botnodes promises beyond 0.1.0: no lost updates, safe failures, recoverable state.

Everything runs against real redis-server processes; a second bot process is a real process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection

from botnodes import LockTimeoutError, TransitionLostError

from .botnodes_support import Cart, Ctx, Menu, Msg, make_nodes

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
