"""botnodes against hostile conditions: any value at a user's keys, a poisoned pipeline batch,
Redis away at commit time, cancelled routes, one user flooding, a stalled or restarted Redis.
Replies after an irreversible step and old buttons: test_botnodes_replies.py. Everything runs
on a real Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from botnodes import Outcome, TransitionLostError, UserBusyError

from ..conftest import RedisServer
from .botnodes_support import (
    SCAN_COUNT,
    Cart,
    Ctx,
    Menu,
    Msg,
    make_nodes,
)

NESTED = "[" * 100_000 + "]" * 100_000

# Every kind of bytes a state value can be that is not a node this registry can read.
BAD_VALUES: dict[str, bytes] = {
    "not-utf8": b"\xff\xfe\x80",
    "empty": b"",
    "whitespace": b" \n\t ",
    "one-megabyte": b"x" * 1_000_000,
    "one-megabyte-json": json.dumps({"node_name": "cart", "items": ["x" * 1_000_000, 5]}).encode(),
    "nested-array": NESTED.encode(),
    "nested-in-field": ('{"node_name":"cart","items":' + NESTED + "}").encode(),
    "json-array": b"[]",
    "json-number": b"12",
    "json-string": b'"cart"',
    "json-null": b"null",
    "json-true": b"true",
    "no-key": b"{}",
    "key-not-string": b'{"node_name": 5}',
    "unknown-key": b'{"node_name": "gone"}',
    "wrong-field-type": b'{"node_name": "cart", "items": "tea"}',
    "version-not-int": b'{"node_name": "cart", "_v": "1"}',
    "visit-negative": b'{"node_name": "cart", "_n": -1}',
    "visit-not-int": b'{"node_name": "cart", "_n": [1]}',
    "surrogate-escape-ok-but-bad-data": b'{"node_name": "cart", "items": {"\\ud800": 1}}',
}

Writer = Callable[[Redis, str], Awaitable[Any]]

# A key of every other Redis type.
OTHER_TYPES: dict[str, Writer] = {
    "hash": lambda r, key: r.hset(key, "f", "v"),
    "list": lambda r, key: r.rpush(key, "a", "b"),
    "set": lambda r, key: r.sadd(key, "a"),
    "zset": lambda r, key: r.zadd(key, {"a": 1.0}),
    "stream": lambda r, key: r.xadd(key, {"f": "v"}),
}


async def snapshot(redis: Redis, prefix: str) -> dict[bytes, tuple[Any, Any]]:
    """Every key outside `prefix`'s user 1 with its type and a dump: what must stay as it was."""
    found: dict[bytes, tuple[Any, Any]] = {}
    async for key in redis.scan_iter(match=f"{prefix}*", count=SCAN_COUNT):
        if key.startswith(f"{prefix}:{{1}}".encode()):
            continue
        found[key] = (await redis.type(key), await redis.dump(key))
    return found


async def route_with_neighbours(nodes: Any, redis: Redis, prefix: str) -> None:
    """Route user 1 in the same pipeline batch as 20 healthy users, and check the neighbours."""
    for user_id in range(100, 120):
        await nodes.user(user_id).to(Cart([f"item{user_id}"]))
    await asyncio.gather(
        nodes.route(Msg(1, "hi")), *(nodes.route(Msg(u, "more")) for u in range(100, 120))
    )
    for user_id in range(100, 120):
        node = await nodes.user(user_id).get_node()
        assert isinstance(node, Cart)
        assert node._data.items == [f"item{user_id}", "more"]
        assert await redis.exists(f"{prefix}:{{{user_id}}}:lock") == 0


def warnings_about_user_1(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "user 1" in r.getMessage()
    ]


# 1. Any stored value resets the user, never strands them ----------------------------------


@pytest.mark.parametrize("raw", BAD_VALUES.values(), ids=BAD_VALUES.keys())
async def test_any_bytes_at_the_state_key_reset_the_user_with_one_warning(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    await redis_client.set(f"{state_key}:other", "untouched")
    await redis_client.set(f"{state_key}:{{1}}", raw)
    before = await snapshot(redis_client, state_key)
    caplog.clear()
    await route_with_neighbours(nodes, redis_client, state_key)
    assert ctx.texts(1) == ["menu"]
    assert isinstance(await nodes.user(1).get_node(), Menu)
    [warning] = warnings_about_user_1(caplog)
    assert warning.startswith("resetting user 1 to the start node: ")
    assert await redis_client.exists(f"{state_key}:{{1}}:lock") == 0
    after = await snapshot(redis_client, state_key)
    assert {k: v for k, v in after.items() if k in before} == before


@pytest.mark.parametrize("kind", OTHER_TYPES)
async def test_a_key_of_another_type_at_the_state_key_resets_the_user(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    await OTHER_TYPES[kind](redis_client, f"{state_key}:{{1}}")
    await route_with_neighbours(nodes, redis_client, state_key)
    assert ctx.texts(1) == ["menu"]
    assert await redis_client.type(f"{state_key}:{{1}}") == b"string"
    [warning] = warnings_about_user_1(caplog)
    assert warning == f"resetting user 1 to the start node: the state key was a Redis {kind}"


LOCKS: dict[str, Writer] = {
    **{f"a-{kind}": write for kind, write in OTHER_TYPES.items()},
    "garbage-with-ttl": lambda r, key: r.set(key, "\xff garbage", px=60_000),
    "garbage-without-ttl": lambda r, key: r.set(key, "garbage"),
    "token-without-ttl": lambda r, key: r.set(key, "0123abcd:7"),
    "token-with-a-ttl-no-holder-sets": lambda r, key: r.set(key, "0123abcd:7", ex=86_400),
    "empty-string": lambda r, key: r.set(key, ""),
}


@pytest.mark.parametrize("lock", LOCKS.values(), ids=LOCKS.keys())
async def test_a_lock_no_botnodes_process_can_hold_is_recovered_at_once(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture, lock: Writer
) -> None:
    nodes = make_nodes(redis_client, state_key, lock_wait_timeout=1.0)
    await nodes.user(1).to(Cart(["kept"]))
    await lock(redis_client, f"{state_key}:{{1}}:lock")
    caplog.clear()
    await route_with_neighbours(nodes, redis_client, state_key)  # no LockTimeoutError
    node = await nodes.user(1).get_node()
    assert isinstance(node, Cart)
    assert node._data.items == ["kept", "hi"]  # the state itself was fine: kept
    [warning] = warnings_about_user_1(caplog)
    assert warning.startswith("repaired the keys of user 1: the lock ")
    assert await redis_client.exists(f"{state_key}:{{1}}:lock") == 0


@pytest.mark.parametrize("kind", [*OTHER_TYPES, "string"])
async def test_the_010_hash_key_of_another_type_is_left_alone(
    redis_client: Redis, state_key: str, kind: str
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    if kind == "string":
        await redis_client.set(state_key, "not a hash")
    else:
        await OTHER_TYPES[kind](redis_client, state_key)
    dump = await redis_client.dump(state_key)
    await nodes.route(Msg(1, "hi"))
    await nodes.route(Msg(1, "cart"))
    assert ctx.texts(1) == ["menu", "cart: empty"]
    assert await redis_client.dump(state_key) == dump


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"[1]", b'{"node_name":"gone"}'], ids=repr)
async def test_a_bad_010_hash_field_resets_the_user_and_is_dropped(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    await redis_client.hset(state_key, mapping={"1": raw, "2": '{"node_name":"menu"}'})
    await nodes.route(Msg(1, "hi"))
    assert ctx.texts(1) == ["menu"]
    assert warnings_about_user_1(caplog)[0].startswith("resetting user 1 to the start node: ")
    assert await redis_client.hkeys(state_key) == [b"2"]


# 2. One user can't poison a pipeline batch -------------------------------------------------


async def test_a_lone_surrogate_is_stored_and_read_back(
    redis_client: Redis, state_key: str
) -> None:
    nodes = make_nodes(redis_client, state_key)
    await nodes.user(1).to(Cart())
    await asyncio.gather(
        nodes.route(Msg(1, "\ud800")), *(nodes.route(Msg(u, "hi")) for u in range(2, 50))
    )
    node = await nodes.user(1).get_node()
    assert isinstance(node, Cart)
    assert node._data.items == ["\ud800"]


async def test_a_value_redis_cant_encode_fails_only_its_own_user(
    redis_client: Redis, state_key: str
) -> None:
    nodes: Any = make_nodes(redis_client, state_key, event_to_user_id=lambda e: e.text)
    users = [f"user{n}" for n in range(30)]
    results = await asyncio.gather(
        nodes.route(Msg(0, "bad\udc80")),
        *(nodes.route(Msg(0, user)) for user in users),
        return_exceptions=True,
    )
    assert isinstance(results[0], UnicodeEncodeError)
    assert results[1:] == [Outcome.STARTED] * len(users)
    for user in users:
        assert isinstance(await nodes.user(user).get_node(), Menu)
        assert await redis_client.exists(f"{state_key}:{{{user}}}:lock") == 0


# 3. Redis away when the node already acted -------------------------------------------------


async def test_a_commit_is_retried_until_redis_is_back(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis("--appendonly", "yes", "--appendfsync", "always")
    redis = Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        ctx = Ctx(delay=0.5)
        nodes = make_nodes(redis, "outage", ctx, commit_timeout=15)
        await nodes.route(Msg(1, "hi"))
        await nodes.route(Msg(1, "checkout"))
        await nodes.route(Msg(1, "tea"))
        route = asyncio.create_task(nodes.route(Msg(1, "pay")))
        await asyncio.sleep(0.2)  # the order is being placed
        server.stop()
        await asyncio.sleep(1.5)  # Redis is away when the node commits
        server.start()
        assert await route == Outcome.MOVED
        assert ctx.orders == [["tea"]]
        assert ctx.texts(1)[-3:] == ["paying", "paid", "menu"]
        assert isinstance(await nodes.user(1).get_node(), Menu)
        assert await redis.exists("outage:{1}:lock") == 0
    finally:
        await redis.aclose()


async def test_a_commit_redis_never_takes_raises_transition_lost_and_sends_nothing(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis()
    redis = Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        ctx = Ctx(delay=0.3)
        nodes = make_nodes(redis, "outage", ctx, commit_timeout=1)
        await nodes.route(Msg(1, "hi"))
        await nodes.route(Msg(1, "checkout"))
        route = asyncio.create_task(nodes.route(Msg(1, "pay")))
        await asyncio.sleep(0.1)
        server.stop()
        with pytest.raises(TransitionLostError, match="node 'menu' of user 1 was not stored"):
            await route
        assert ctx.orders == [[]]  # the effect happened ...
        assert ctx.texts(1) == ["menu", "checkout: 0 item(s)"]  # ... but no reply pretends so
    finally:
        await redis.aclose()


# 4. Cancellation never leaves a lock -------------------------------------------------------


async def test_a_route_cancelled_while_its_lock_script_runs_leaves_no_lock(
    redis_client: Redis, state_key: str
) -> None:
    nodes = make_nodes(redis_client, state_key)
    await nodes.user(1).to(Cart())
    for _ in range(20):
        route = asyncio.create_task(nodes.route(Msg(1, "tea")))
        await asyncio.sleep(0)  # the lock script is queued, not yet answered
        route.cancel()
        with pytest.raises(asyncio.CancelledError):
            await route
    await asyncio.sleep(0.2)
    assert await redis_client.exists(f"{state_key}:{{1}}:lock") == 0
    async with asyncio.timeout(1):  # the next event is served at once, not after LOCK_TTL
        await nodes.route(Msg(1, "coffee"))


# 5. One user's backlog doesn't starve the others -------------------------------------------


async def test_events_past_the_per_user_cap_are_refused_and_the_rest_kept(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx(delay=0.05)
    nodes = make_nodes(redis_client, state_key, ctx, max_waiting_per_user=3)
    await nodes.user(1).to(Cart())
    results = await asyncio.gather(
        *(nodes.route(Msg(1, f"item{n}")) for n in range(10)), return_exceptions=True
    )
    assert results[:4] == [Outcome.STAYED] * 4
    assert all(isinstance(result, UserBusyError) for result in results[4:])
    node = await nodes.user(1).get_node()
    assert isinstance(node, Cart)
    assert node._data.items == ["item0", "item1", "item2", "item3"]


async def test_a_users_backlog_holds_no_concurrency_slot(
    redis_client: Redis, state_key: str
) -> None:
    gate = asyncio.Event()
    ctx = Ctx(gate=gate)  # user 1's events are held in Cart until the gate opens
    nodes = make_nodes(redis_client, state_key, ctx, max_concurrent=2)
    await nodes.user(1).to(Cart())
    await nodes.user(2).to(Menu())
    finished: list[str] = []

    async def route(event: Msg) -> None:
        await nodes.route(event)
        finished.append(f"{event.user_id}:{event.text}")

    flood = [asyncio.create_task(route(Msg(1, f"f{n}"))) for n in range(10)]
    async with asyncio.timeout(5):  # a held slot would keep user 2 waiting for the gate
        await ctx.at_gate.wait()  # user 1's first event holds its slot
        await route(Msg(2, "hello"))  # a slot is free although user 1 has 9 events queued
    assert finished == ["2:hello"]
    assert ctx.running == 1  # user 1's first event is still held, the rest behind it
    gate.set()
    await asyncio.gather(*flood)
    node = await nodes.user(1).get_node()
    assert isinstance(node, Cart)
    assert node._data.items == [f"f{n}" for n in range(10)]


# 8. What an adversarial review found already held: keep it that way --------------------------


async def test_a_redis_that_stalls_mid_burst_loses_nothing(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis("--enable-debug-command", "yes")
    redis = Redis.from_url(server.url)
    stalling = Redis.from_url(server.url)
    try:
        nodes = make_nodes(redis, "stall", lock_wait_timeout=10)
        await nodes.user(1).to(Cart())
        burst = asyncio.gather(*(nodes.route(Msg(1, f"dish{n}")) for n in range(50)))
        await asyncio.sleep(0.01)
        # Redis answers nobody for half a second while the burst is in flight.
        await stalling.execute_command("DEBUG", "SLEEP", "0.5")  # type: ignore[no-untyped-call]
        await burst
        node = await nodes.user(1).get_node()
        assert isinstance(node, Cart)
        assert node._data.items == [f"dish{n}" for n in range(50)]
    finally:
        await stalling.aclose()
        await redis.aclose()


async def test_state_survives_an_rdb_restart_and_routing_goes_on(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis("--save", "3600 1")
    # Like the bot's client (redis_connection.py): a connection the restart closed is retried.
    redis = Redis.from_url(
        server.url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 3),
        retry_on_error=[RedisConnectionError],
    )
    try:
        nodes = make_nodes(redis, "rdb")
        await nodes.user(1).to(Cart(["tea"]))
        await redis.save()
        server.stop()
        server.start()
        await nodes.route(Msg(1, "cake"))
        node = await nodes.user(1).get_node()
        assert isinstance(node, Cart)
        assert node._data.items == ["tea", "cake"]
    finally:
        await redis.aclose()
