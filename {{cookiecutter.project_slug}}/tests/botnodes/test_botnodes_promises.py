"""The promises at the edges: re-deliveries, users who come back, a restart, big data, order.

Each test here failed on the version before the change it guards (see the generated
docs' Guarantees): they run botnodes against a real Redis, several `Nodes` standing in for
several processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from botnodes import Outcome, StateTooLargeError, after_commit
from botnodes.storage import StateStore

from ..conftest import RedisServer
from .botnodes_support import Cart, Checkout, Ctx, Menu, Msg, make_nodes, visit_of


async def test_a_redelivered_event_runs_once_in_any_process(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx()
    first = make_nodes(redis_client, state_key, ctx)
    second = make_nodes(redis_client, state_key, ctx)  # another replica
    await first.user(1).to(Checkout())
    assert await first.route(Msg(1, "tea", event_id="m7")) == Outcome.MOVED
    assert await second.route(Msg(1, "tea", event_id="m7")) == Outcome.DUPLICATE
    assert await first.route(Msg(1, "tea", event_id="m7")) == Outcome.DUPLICATE
    assert await second.route(Msg(1, "pay", event_id="m8")) == Outcome.MOVED
    assert await first.route(Msg(1, "pay", event_id="m8")) == Outcome.DUPLICATE
    assert ctx.orders == [["tea"]]
    assert ctx.texts(1).count("paid") == 1
    # A duplicate leaves no lock behind: the next event is served at once.
    async with asyncio.timeout(1):
        assert await first.route(Msg(1, "hi", event_id="m9")) == Outcome.STAYED


async def test_a_burst_of_redeliveries_runs_once(redis_client: Redis, state_key: str) -> None:
    ctx = Ctx()
    replicas = [make_nodes(redis_client, state_key, ctx) for _ in range(3)]
    await replicas[0].user(1).to(Checkout(["tea"]))
    outcomes = await asyncio.gather(
        *(replicas[n % 3].route(Msg(1, "pay", event_id="m1")) for n in range(12))
    )
    assert sorted(o.value for o in outcomes) == ["duplicate"] * 11 + ["moved"]
    assert ctx.orders == [["tea"]]


async def test_a_redelivery_after_the_state_expired_or_was_forgotten_still_runs_once(
    redis_client: Redis, state_key: str
) -> None:
    nodes = make_nodes(redis_client, state_key, state_ttl=0.2)
    await nodes.route(Msg(1, "hi", event_id="m1"))
    await nodes.route(Msg(1, "cart", event_id="m2"))
    await asyncio.sleep(0.3)  # past the TTL, however late the wake-up
    assert await redis_client.exists(f"{state_key}:{{1}}") == 0  # expired
    assert await nodes.route(Msg(1, "cart", event_id="m2")) == Outcome.DUPLICATE
    await nodes.route(Msg(1, "cart", event_id="m3"))  # a new event starts the user over
    await nodes.user(1).forget()
    assert await nodes.route(Msg(1, "cart", event_id="m3")) == Outcome.DUPLICATE


async def test_handled_events_are_bounded_and_expire(redis_client: Redis, state_key: str) -> None:
    nodes = make_nodes(redis_client, state_key, dedupe_window=1)
    await nodes.user(1).to(Cart())
    for n in range(200):
        await nodes.route(Msg(1, "x", event_id=f"m{n}"))
    seen = f"{state_key}:{{1}}:seen"
    record = await redis_client.get(seen)  # the ids between newlines (handled.py)
    assert isinstance(record, bytes)
    assert isinstance(record, bytes)
    assert record.split(b"\n")[1:-1] == [f"m{n}".encode() for n in range(72, 200)]  # newest 128
    assert 0 < await redis_client.pttl(seen) <= 1000
    assert await nodes.route(Msg(1, "x", event_id="m199")) == Outcome.DUPLICATE


async def test_updates_marked_outside_the_nodes_share_the_bounded_window(
    redis_client: Redis, state_key: str
) -> None:
    """`mark_handled` (a /language, a sticker's hint) and a stored step's record are one set:
    a re-delivery of either is found by both, in any process, for the newest 128 ids and
    `dedupe_window` after the last mark."""
    first = make_nodes(redis_client, state_key, dedupe_window=0.5)
    second = make_nodes(redis_client, state_key, dedupe_window=0.5)  # another replica
    assert await first.mark_handled(1, "m1") is True
    assert await second.mark_handled(1, "m1") is False
    assert await first.mark_handled(2, "m1") is True  # per user
    assert await second.route(Msg(1, "hi", event_id="m1")) == Outcome.DUPLICATE
    assert await first.route(Msg(1, "hi", event_id="m2")) != Outcome.DUPLICATE
    assert await second.mark_handled(1, "m2") is False
    for n in range(200):
        await first.mark_handled(1, f"k{n}")
    seen = f"{state_key}:{{1}}:seen"
    record = await redis_client.get(seen)  # the ids between newlines (handled.py)
    assert isinstance(record, bytes)
    assert record.split() == [f"k{n}".encode() for n in range(72, 200)]  # the newest 128 only
    assert 0 < await redis_client.pttl(seen) <= 500
    assert await second.mark_handled(1, "k199") is False
    assert await second.mark_handled(1, "k0") is True  # pushed out: handled again (the limit)
    await asyncio.sleep(0.6)  # past the window, however late the wake-up
    assert await redis_client.exists(seen) == 0
    assert await first.mark_handled(1, "k199") is True


async def test_visits_never_repeat_across_expiry_and_resets(
    redis_client: Redis, state_key: str
) -> None:
    nodes = make_nodes(redis_client, state_key, event_visit=lambda event: event.visit)
    await nodes.route(Msg(1, "hi"))
    old = await visit_of(nodes, 1)
    await nodes.route(Msg(1, "checkout"))
    before_reset = await visit_of(nodes, 1)
    await redis_client.delete(f"{state_key}:{{1}}")  # as STATE_TTL would
    await nodes.route(Msg(1, "hi"))
    new = await visit_of(nodes, 1)
    assert new > before_reset
    # Yesterday's menu button can't act on today's menu, though both are the user's first.
    assert await nodes.route(Msg(1, "checkout", visit=old)) == Outcome.STALE
    await redis_client.set(f"{state_key}:{{1}}", b"\xff not json")  # a reset
    await nodes.route(Msg(1, "hi"))
    assert await visit_of(nodes, 1) > new


async def test_a_step_over_state_max_bytes_is_refused_and_the_state_kept(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx, state_max_bytes=300)
    await nodes.user(1).to(Checkout())
    for n in range(5):
        await nodes.route(Msg(1, f"dish-{n}-" + "x" * 30))
    stored = await redis_client.get(f"{state_key}:{{1}}")
    with pytest.raises(StateTooLargeError, match=r"over the limit of 300 \(state_max_bytes\)"):
        await nodes.route(Msg(1, "one-too-many-" + "x" * 100))
    assert await redis_client.get(f"{state_key}:{{1}}") == stored
    assert len(stored or b"") <= 300
    # Nothing is stuck: the lock went back and a step that fits is stored.
    async with asyncio.timeout(1):
        await nodes.route(Msg(1, "pay"))
    assert [len(order) for order in ctx.orders] == [5]


async def test_a_lock_brought_back_by_the_append_only_file_holds_a_user_only_briefly(
    start_redis: Callable[..., RedisServer],
) -> None:
    server = start_redis("--appendonly", "yes", "--appendfsync", "always")
    redis = Redis.from_url(
        server.url,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 10),
        retry_on_error=[RedisConnectionError],
    )
    try:
        nodes = make_nodes(redis, "aof")
        await nodes.user(1).to(Cart())
        # A process takes the user's lock (as for an event) and dies with Redis: the
        # append-only file brings the lock back with the TTL the dead holder gave it.
        store = StateStore(redis, "aof", state_ttl_ms=None, lock_ttl_ms=5000, legacy=False)
        assert (await store.try_lock_and_read(1, "0123abcd:1")).taken
        server.stop()
        server.start()
        assert await redis.exists("aof:{1}:lock") == 1
        started = time.perf_counter()
        await nodes.route(Msg(1, "tea"))  # waits for the dead holder's lease, no error
        assert time.perf_counter() - started < 5.0 + 1.0  # lock_ttl, not 30 s of "try again"
        node = await nodes.user(1).get_node()
        assert isinstance(node, Cart)
        assert node._data.items == ["tea"]
    finally:
        await redis.aclose()


async def test_replies_leave_in_order_when_the_next_event_reaches_another_process(
    redis_client: Redis, state_key: str
) -> None:
    sent: list[str] = []
    slow = asyncio.Event()
    held = asyncio.Event()

    class SlowCtx(Ctx):
        async def reply(self, user_id: int, text: str) -> None:
            async def send() -> None:
                if text == "paying":
                    held.set()
                    await slow.wait()  # flood control holds this reply back
                sent.append(text)

            await after_commit(send)

    ctx = SlowCtx()
    first = make_nodes(redis_client, state_key, ctx, lock_wait_timeout=0.3)
    second = make_nodes(redis_client, state_key, ctx, lock_wait_timeout=0.3)
    await first.user(1).to(Checkout(["tea"]))
    sent.clear()
    paying = asyncio.create_task(first.route(Msg(1, "pay")))
    async with asyncio.timeout(5):
        await held.wait()  # the step is stored, its first reply is held back
    menu = asyncio.create_task(second.route(Msg(1, "checkout")))
    # The second replica waits for the first one's replies, longer than lock_wait_timeout
    # (the holder is alive and finishing), and is not refused.
    await asyncio.sleep(0.6)  # twice lock_wait_timeout
    assert not menu.done()
    slow.set()
    assert await paying == Outcome.MOVED
    assert await menu == Outcome.MOVED
    assert sent == ["paying", "paid", "menu", "checkout: 0 item(s)"]


async def test_a_user_waiting_behind_their_own_slow_replies_is_served_not_refused(
    redis_client: Redis, state_key: str
) -> None:
    release = asyncio.Event()
    held = asyncio.Event()

    class HeldCtx(Ctx):
        async def reply(self, user_id: int, text: str) -> None:
            async def send() -> None:
                if text == "paying":
                    held.set()
                    await release.wait()
                self.say(user_id, text)

            await after_commit(send)

    ctx = HeldCtx()
    nodes = make_nodes(redis_client, state_key, ctx, lock_wait_timeout=0.3, max_concurrent=1)
    await nodes.user(1).to(Checkout(["tea"]))
    await nodes.user(2).to(Menu())
    paying = asyncio.create_task(nodes.route(Msg(1, "pay")))
    async with asyncio.timeout(5):
        await held.wait()
    next_one = asyncio.create_task(nodes.route(Msg(1, "checkout")))
    # Another user is served while user 1's replies wait: the only slot is free.
    async with asyncio.timeout(1):
        assert await nodes.route(Msg(2, "cart")) == Outcome.MOVED
    await asyncio.sleep(0.6)  # twice lock_wait_timeout
    assert not next_one.done()
    release.set()
    assert await paying == Outcome.MOVED
    assert await next_one == Outcome.MOVED
    assert ctx.texts(1)[-4:] == ["paying", "paid", "menu", "checkout: 0 item(s)"]
