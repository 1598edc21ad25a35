"""Timers across processes (botnodes/timers.py): claims, replicas, a dead claimant, storage
with the node, what timers cost, and a Redis Cluster. Same clock and nodes as
test_botnodes_timers.py (timers_support.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from botnodes import Nodes

from .botnodes_support import stored_json
from .timers_support import (
    START,
    Ask,
    Clock,
    Counted,
    Ctx,
    Msg,
    advance,
    clock,
    ctx,
    make,
    nodes,
    schedule,
)

__all__ = ["clock", "ctx", "nodes"]  # the fixtures, from timers_support.py


async def test_replicas_fire_each_timer_exactly_once(
    redis_client: Redis, state_key: str, clock: Clock
) -> None:
    contexts = [Ctx(), Ctx(), Ctx()]
    replicas = [make(redis_client, state_key, ctx, clock) for ctx in contexts]
    users = range(1, 41)
    for user_id in users:
        await replicas[user_id % 3].route(Msg(user_id, "hi"))
    clock.now += 61
    for _ in range(3):
        await asyncio.gather(*(replica.fire_due() for replica in replicas))
    sent = [text for ctx in contexts for _, text in ctx.sent if text == "still there?"]
    assert len(sent) == len(users)
    for user_id in users:
        nudges = sum(ctx.texts(user_id).count("still there?") for ctx in contexts)
        assert nudges == 1, f"user {user_id} was nudged {nudges} times"


async def test_a_claim_of_a_process_that_died_fires_again_after_the_claim_ttl(
    redis_client: Redis, state_key: str, clock: Clock, ctx: Ctx
) -> None:
    dead = make(redis_client, state_key, Ctx(), clock, timer_claim_ttl=30)
    alive = make(redis_client, state_key, ctx, clock, timer_claim_ttl=30)
    await alive.route(Msg(1, "hi"))
    clock.now += 61
    # The dead process claimed the user and was killed before firing:
    claimed = await dead._timers.claim(round(clock.now * 1000), 30_000, 100)
    assert claimed == [(1, round((START + 60) * 1000))]
    assert await alive.fire_due() == 0
    clock.now += 30
    assert await alive.fire_due() == 1
    assert ctx.texts(1) == ["question?", "still there?"]
    assert await alive.fire_due(clock.now + 1) == 0  # the firing is stored: nothing twice


async def test_a_second_firing_of_the_same_timer_is_a_no_op(
    nodes: Nodes[Ctx, Msg, int], ctx: Ctx, clock: Clock, redis_client: Redis, state_key: str
) -> None:
    await nodes.route(Msg(1, "hi"))
    clock.now += 61
    await nodes.fire_due()
    # As if a process that fired it too, but slower, now got the user's lock:
    assert await nodes._fire(1) is None
    assert ctx.texts(1) == ["question?", "still there?"]


async def test_a_failing_on_timeout_drops_its_timer_data_and_replies_and_keeps_the_others(
    nodes: Nodes[Ctx, Msg, int], ctx: Ctx, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    await nodes.route(Msg(1, "hi"))
    await nodes.route(Msg(1, "boom"))
    await advance(nodes, clock, 61)
    assert "nudge exploded" in caplog.text
    node = await nodes.user(1).get_node()
    assert isinstance(node, Ask)
    assert node._data.answers == ["boom"]
    assert ctx.texts(1) == ["question?"]
    await advance(nodes, clock, 240)
    assert ctx.texts(1) == ["question?", "bye"]


async def test_timers_are_stored_with_the_node_and_counted(
    redis_client: Redis, state_key: str, ctx: Ctx, clock: Clock
) -> None:
    observer = Counted()
    nodes = make(redis_client, state_key, ctx, clock, observer=observer)
    await nodes.route(Msg(1, "hi"))
    stored = await stored_json(redis_client, f"{state_key}:{{1}}")
    armed = round(START * 1000)
    assert stored["_t"] == {
        "at": armed,
        "due": {"nudge": armed + 60_000, "give_up": armed + 300_000},
        "s": armed + 60_000,  # the schedule's score for the user: see the lazy tests above
    }
    assert observer.scheduled == [("ask", "nudge"), ("ask", "give_up")]
    clock.now += 10
    await nodes.route(Msg(1, "x"))
    assert observer.cancelled == [("ask", "nudge"), ("ask", "give_up")]
    clock.now += 60.5
    await nodes.fire_due()
    [(node, name, lateness)] = observer.fired
    assert (node, name) == ("ask", "nudge")
    assert lateness == pytest.approx(0.5)
    assert len(observer.cancelled) == 2  # the fired timer is not "cancelled"


async def test_off_timeouts_arm_nothing_and_cost_no_command(
    redis_client: Redis, state_key: str, clock: Clock
) -> None:
    ctx = Ctx(nudge_after=0, give_up_after=0)
    nodes = make(redis_client, state_key, ctx, clock)
    await nodes.route(Msg(1, "hi"))
    before = await evalsha_calls(redis_client)
    await nodes.route(Msg(1, "an answer"))
    assert await evalsha_calls(redis_client) - before == 2  # lock and read, write and unlock
    assert "_t" not in await stored_json(redis_client, f"{state_key}:{{1}}")
    assert await schedule(redis_client, state_key) == {}


async def test_a_step_with_timers_costs_no_script_call_of_its_own(
    nodes: Nodes[Ctx, Msg, int], redis_client: Redis, state_key: str
) -> None:
    # The commit script reschedules the timers itself: a step that arms them runs the same
    # two scripts (lock-and-read, commit) as a step that arms none.
    await nodes.route(Msg(1, "hi"))
    before = await evalsha_calls(redis_client)
    await nodes.route(Msg(1, "an answer"))  # re-arms the node's timer
    assert await evalsha_calls(redis_client) - before == 2
    assert list(await schedule(redis_client, state_key)) == ["1"]  # and it is scheduled


async def evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_run_timers_fires_within_a_second_on_the_real_clock(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx(nudge_after=0.3)
    observer = Counted()
    nodes = make(redis_client, state_key, ctx, time.time, observer=observer)
    poller = asyncio.create_task(nodes.run_timers())
    try:
        await nodes.route(Msg(1, "hi"))
        ctx.replied.clear()
        async with asyncio.timeout(1.3):
            await ctx.replied.wait()
    finally:
        poller.cancel()
    assert ctx.texts(1) == ["question?", "still there?"]
    assert 0 <= observer.fired[0][2] < 1.0


async def test_timers_work_on_a_redis_cluster(
    redis_cluster_url: str, state_key: str, clock: Clock
) -> None:
    cluster = RedisCluster.from_url(redis_cluster_url)
    try:
        await timers_on_the_cluster(cluster, state_key, clock)
    finally:
        await cluster.aclose()


async def timers_on_the_cluster(cluster: RedisCluster, state_key: str, clock: Clock) -> None:
    """Replicas share users spread over the shards' slots; each nudge goes out once."""
    contexts = [Ctx(), Ctx()]
    replicas = [make(cluster, state_key, ctx, clock) for ctx in contexts]
    for user_id in range(20):
        await replicas[user_id % 2].route(Msg(user_id, "hi"))
    await replicas[0].route(Msg(3, "done"))  # its entry is left, dropped when it falls due
    clock.now += 30
    await replicas[1].route(Msg(4, "an answer"))  # nudge at +90: its entry wakes early
    clock.now += 31
    await asyncio.gather(*(replica.fire_due() for replica in replicas))
    for user_id in range(20):
        nudges = sum(ctx.texts(user_id).count("still there?") for ctx in contexts)
        assert nudges == (0 if user_id in (3, 4) else 1)
    assert await cluster.zscore(replicas[0]._timers.key_of("3"), "3") is None
    assert await cluster.zscore(replicas[0]._timers.key_of("4"), "4") == (START + 90) * 1000
    clock.now += 30
    await asyncio.gather(*(replica.fire_due() for replica in replicas))
    assert sum(ctx.texts(4).count("still there?") for ctx in contexts) == 1
    shard_slots = {await cluster.cluster_keyslot(f"{state_key}:timers:{{t{s}}}") for s in range(8)}
    assert len(shard_slots) == 8
