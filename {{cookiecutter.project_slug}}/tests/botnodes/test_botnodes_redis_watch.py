"""`stored_or_cut` (botnodes/redis_watch.py) against a real redis-server frozen with SIGSTOP.

Work that waits on a mute Redis is given up after its deadline, and cancelled only while
nothing of it can be stored: once its write went out, Redis may store it on waking, so the
work is left to finish (a webhook answers 503 all the same; the step's replies still go out).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from botnodes.redis_watch import RedisProbe, saving, stored_or_cut, watch_saving

from ..conftest import RedisServer

#: The work's deadline and the probe's PING timeout: short, the server is frozen anyway.
DEADLINE = 0.3
PROBE = 0.3
#: A socket timeout far beyond the test's waits: the write is stuck, not failed.
SOCKET_TIMEOUT = 30.0


@pytest.fixture
async def frozen_able(
    start_redis: Callable[..., RedisServer],
) -> AsyncIterator[tuple[RedisServer, Redis, RedisProbe]]:
    server = start_redis()
    client = Redis.from_url(server.url, socket_timeout=SOCKET_TIMEOUT, retry=Retry(NoBackoff(), 0))
    probe_client = Redis.from_url(server.url, retry=Retry(NoBackoff(), 0))
    try:
        await client.ping()
        yield server, client, RedisProbe(probe_client.ping, PROBE)
    finally:
        await client.aclose()
        await probe_client.aclose()


async def step(redis: Redis, key: str, *, write_first: bool) -> str:
    """A step: its write announced as sent (as commit.py does) and sent at once, or held up
    before it by a read (taking the user's lease), so nothing of it reaches Redis."""
    if not write_first:
        await redis.get(f"{key}:lease")
    saving()
    await redis.set(key, "stored")
    return "replied"


@pytest.mark.parametrize("announce", [True, False], ids=["write sent", "nothing sent yet"])
async def test_work_given_up_on_a_mute_redis_is_cut_only_if_nothing_of_it_was_sent(
    frozen_able: tuple[RedisServer, Redis, RedisProbe], announce: bool
) -> None:
    server, redis, probe = frozen_able
    sent = asyncio.Event()
    with server.frozen():
        with watch_saving(sent):  # the task copies the context, and with it the event
            work = asyncio.ensure_future(step(redis, "k", write_first=announce))
        given_up = not await stored_or_cut(work, None, deadline=DEADLINE, probe=probe, sent=sent)
        assert given_up
        assert sent.is_set() is announce
        # Sent: left running, waiting for Redis. Not sent: cancelled, nothing will be stored.
        assert work.done() is not announce
    if announce:
        assert await asyncio.wait_for(work, 10) == "replied"
        assert await redis.get("k") == b"stored"
    else:
        assert work.cancelled()
        assert await redis.get("k") is None


async def test_work_on_a_redis_that_answers_is_waited_for_past_its_deadline(
    frozen_able: tuple[RedisServer, Redis, RedisProbe],
) -> None:
    _, redis, probe = frozen_able

    async def slow() -> str:
        await asyncio.sleep(4 * DEADLINE)  # e.g. its turn behind a user's paced replies
        await redis.set("slow", "stored")
        return "replied"

    work = asyncio.ensure_future(slow())
    assert await stored_or_cut(work, None, deadline=DEADLINE, probe=probe)
    assert work.result() == "replied"
