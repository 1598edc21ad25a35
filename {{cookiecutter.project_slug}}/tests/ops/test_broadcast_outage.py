"""`broadcast` while Redis does not answer: a real process, a redis-server frozen (SIGSTOP).

Each Redis call of the job is cut after CALL_DEADLINE and tried again for up to
BROADCAST_REDIS_PATIENCE: a short freeze pauses the job, a long one stops it with one line
(exit 1), and a frozen Redis at SIGTERM does not hold the process past STOP_GRACE. What was
sent stays recorded: the rerun sends nobody the job twice.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from botnodes.telegram.broadcast_command import STOP_GRACE
from botnodes.telegram.broadcast_job import CALL_DEADLINE
from botnodes.telegram.recipients import Recipients
from botnodes.testing import FakeBotAPIServer

from ..conftest import RedisServer
from .bot_process import BotProcess
from .test_broadcast import delivered, run, summary

USERS = list(range(800_001, 800_201))
__all__ = ["run"]  # the fixture, from test_broadcast.py

PATIENCE = 3.0  # BROADCAST_REDIS_PATIENCE of the job under test
#: The scheduler of a busy test machine, on top of the bounds the job promises.
SLACK = 2.0


@pytest.fixture
async def redis_server(
    start_redis: Callable[..., RedisServer], state_key: str
) -> AsyncIterator[tuple[RedisServer, Redis]]:
    """A private redis-server (to freeze) with USERS registered."""
    server = start_redis()
    client = Redis.from_url(server.url)
    registry = Recipients(client, state_key)
    for user in USERS:
        await registry.add(user)
    try:
        yield server, client
    finally:
        await client.aclose()


def job(run: Callable[..., BotProcess], redis_url: str, patience: float = PATIENCE) -> BotProcess:
    return run(
        "outage",
        REDIS_URL=redis_url,
        BROADCAST_RATE="50",  # 200 users: 4 s
        # Calls that never fail by themselves: only the job's own deadlines end them.
        REDIS_SOCKET_TIMEOUT="60",
        REDIS_RETRIES="0",
        BROADCAST_REDIS_PATIENCE=str(patience),
    )


async def sent_to(bot_api: FakeBotAPIServer, count: int) -> None:
    await bot_api.wait_for(lambda: sum(delivered(bot_api).values()) >= count, 30, "sends")


async def test_a_short_freeze_pauses_the_job_and_a_long_one_stops_it_then_a_rerun_finishes(
    bot_api: FakeBotAPIServer,
    run: Callable[..., BotProcess],
    redis_server: tuple[RedisServer, Redis],
) -> None:
    server, _ = redis_server
    first = job(run, server.url)
    await first.start()
    await sent_to(bot_api, 20)
    with server.frozen():
        await asyncio.sleep(PATIENCE / 2)  # shorter than the patience: the job waits
    await sent_to(bot_api, 60)
    with server.frozen():  # longer than the patience: the job stops, in bounded time
        started = time.monotonic()
        assert await first.wait(timeout=2 * (PATIENCE + CALL_DEADLINE) + SLACK) == 1
        took = time.monotonic() - started
    log = first.log()
    assert f"Broadcast outage: stopped, Redis did not answer for {PATIENCE:g}s" in log
    assert "Traceback" not in log
    assert took >= PATIENCE, took
    assert set(delivered(bot_api).values()) == {1}

    second = job(run, server.url)
    await second.start()
    assert await second.wait() == 0
    sent, blocked, failed, unconfirmed = summary(second)
    assert sent + unconfirmed == len(USERS)  # unconfirmed: sends the first run could not record
    assert (blocked, failed) == (0, 0)
    counts = delivered(bot_api)
    assert set(counts.values()) == {1}, "somebody got the job twice"
    assert len(counts) >= sent


async def test_sigterm_while_redis_is_frozen_cuts_after_the_stop_grace(
    bot_api: FakeBotAPIServer,
    run: Callable[..., BotProcess],
    redis_server: tuple[RedisServer, Redis],
) -> None:
    server, _ = redis_server
    stopped = job(run, server.url, patience=60)  # the stop, not the patience, ends the wait
    await stopped.start()
    await sent_to(bot_api, 20)
    with server.frozen():
        started = time.monotonic()
        assert await stopped.stop(signal.SIGTERM) == 1
        took = time.monotonic() - started
    assert took < STOP_GRACE + SLACK, took
    assert f"cut after {STOP_GRACE:g}s: Redis did not answer" in stopped.log()
    assert "Traceback" not in stopped.log()
    rerun = job(run, server.url)
    await rerun.start()
    assert await rerun.wait() == 0
    assert set(delivered(bot_api).values()) == {1}, "somebody got the job twice"
