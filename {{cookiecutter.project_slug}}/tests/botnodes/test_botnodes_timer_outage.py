"""Timers while Redis does not answer (botnodes/timer_loop.py): a real redis-server frozen with
SIGSTOP, the poller of `run_timers` running on the test clock (timers_support.py).

Nothing is lost or doubled: a claim or firing Redis does not serve is given back once Redis
answers, and fires then (not after `timer_claim_ttl`, which the test clock never reaches);
the outage is one line in the log (a bot stopped meanwhile: ops/test_bot_timers_redis_frozen.py).
GIVE_BACK itself is tested on the suite's Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from botnodes import Nodes
from botnodes.timers import GivenBack, TimerSchedule

from ..conftest import RedisServer
from .timers_support import Clock, Ctx, Msg, clock, ctx, make, schedule

__all__ = ["clock", "ctx"]  # the fixtures, from timers_support.py

USERS = (1, 2, 3)
#: The poller's deadline on Redis (NodesSettings.redis_deadline).
DEADLINE = 0.5
#: A client's bound on one Redis call, as a deploy's REDIS_SOCKET_TIMEOUT with no retry.
SOCKET_TIMEOUT = 0.5
#: Room for a busy test machine: the nudges come well before the claim TTL (never, here).
WAIT = 10.0


@pytest.fixture
async def server_and_client(
    start_redis: Callable[..., RedisServer],
) -> AsyncIterator[tuple[RedisServer, Redis]]:
    server = start_redis()
    client = Redis.from_url(server.url, socket_timeout=SOCKET_TIMEOUT, retry=Retry(NoBackoff(), 0))
    try:
        yield server, client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def polling(nodes: Nodes[Ctx, Msg, int]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(nodes.run_timers())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def nudged(ctx: Ctx, users: tuple[int, ...]) -> None:
    """Until every user got their nudge; at most WAIT s."""
    async with asyncio.timeout(WAIT):
        while any("still there?" not in ctx.texts(user) for user in users):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the poller logged (a lock try that Redis failed says so too, once per user)."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.module in {"timers", "timer_loop"} and record.levelno >= logging.WARNING
    ]


async def test_timers_due_while_redis_is_frozen_fire_once_as_soon_as_it_answers(
    server_and_client: tuple[RedisServer, Redis],
    state_key: str,
    clock: Clock,
    ctx: Ctx,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The look that claims them fails (a claim sent to a frozen Redis may still run when it
    wakes up, taking the users for `timer_claim_ttl`): its claim is given back, so they fire
    as soon as Redis answers."""
    server, client = server_and_client
    nodes = make(client, state_key, ctx, clock, timer_poll_interval=0.05, redis_deadline=DEADLINE)
    for user in USERS:
        await nodes.route(Msg(user, "hi"))
    caplog.set_level(logging.INFO, logger="botnodes")
    async with polling(nodes):
        with server.frozen():
            clock.now += 61  # the nudges are due now
            await asyncio.sleep(6 * SOCKET_TIMEOUT)
            assert ctx.texts(1) == ["question?"]
        await nudged(ctx, USERS)
        await asyncio.sleep(0.3)  # a second firing would come now
    for user in USERS:
        assert ctx.texts(user) == ["question?", "still there?"]
    lines = outage_lines(caplog)
    assert len(lines) == 2, lines  # the outage, and Redis back: not a line per look or timer
    assert "timers wait for Redis" in lines[0]
    assert lines[1].startswith("Redis answers again")


async def test_a_firing_cut_while_redis_is_frozen_gives_its_claim_back(
    server_and_client: tuple[RedisServer, Redis],
    state_key: str,
    clock: Clock,
    ctx: Ctx,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Claimed, the firing waits for its user's lock (another process holds it) when Redis
    freezes: past the deadline, with no PING answered, it is cut and its claim given back;
    once Redis answers and the lock is free it fires, once."""
    server, client = server_and_client
    nodes = make(
        client,
        state_key,
        ctx,
        clock,
        timer_poll_interval=0.05,
        redis_deadline=DEADLINE,
        lock_ttl=60,
        lock_wait_timeout=60,
    )
    await nodes.route(Msg(1, "hi"))
    lock = f"{state_key}:{{1}}:lock"
    await client.set(lock, "0123abcd:1", px=60_000)  # another process's token
    caplog.set_level(logging.INFO, logger="botnodes")
    async with polling(nodes):
        clock.now += 61
        async with asyncio.timeout(WAIT):
            while nodes.timer_firings == 0:  # noqa: ASYNC110 - claimed: waiting for the lock
                await asyncio.sleep(0.01)
        with server.frozen():
            async with asyncio.timeout(WAIT):
                while nodes.timer_firings:  # noqa: ASYNC110 - until it is cut
                    await asyncio.sleep(0.05)
        await client.delete(lock)  # the other process is done
        await nudged(ctx, (1,))
        await asyncio.sleep(0.3)
    assert ctx.texts(1) == ["question?", "still there?"]
    lines = outage_lines(caplog)
    assert len(lines) == 2, lines
    assert lines[0].startswith("timer of user 1 not fired")
    assert lines[1].startswith("Redis answers again")


async def test_a_claim_given_back_is_due_again_unless_its_score_moved_since(
    redis_client: Redis, state_key: str
) -> None:
    """GIVE_BACK: the users a claim took (all of them, or those named) are due again at the
    score given, except one a step or another claim scored since; repeating it changes
    nothing."""
    timers = TimerSchedule(
        redis_client, state_key, shards=1, run=lambda script, keys, args: script(keys, args)
    )
    key = timers.shard_key(0)
    for user, due in ((1, 1000), (2, 1000), (3, 5000)):
        await timers.set(user, due)
    assert sorted(await timers.claim(2000, 30_000, 100)) == [(1, 1000), (2, 1000)]
    await timers.set(2, 40_000)  # a step of user 2 since
    assert await timers.give_back([GivenBack(key, 32_000, 2000)]) == 1
    assert await schedule(redis_client, state_key) == {"1": 2000, "2": 40_000, "3": 5000}

    assert await timers.claim(2000, 30_000, 100) == [(1, 2000)]
    named = GivenBack(key, 32_000, 1000, (timers.member(1),))
    assert await timers.give_back([named]) == 1
    assert await timers.give_back([named]) == 0  # already given back
    assert (await schedule(redis_client, state_key))["1"] == 1000
