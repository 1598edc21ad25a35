"""Reminders while Redis does not answer: a real bot process, a redis-server frozen (SIGSTOP).

A reminder whose firing waits on a frozen Redis is cut once WEBHOOK_REDIS_DEADLINE passed
with no PING answered, and its claim is given back when Redis answers: it goes out then,
exactly once, instead of after the claim's 30 s (see docs/guarantees.md). The outage is one
line in the log, and SIGTERM during it does not wait for Redis.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from botnodes.redis_watch import CANCEL_GRACE, PROBE_TIMEOUT
from botnodes.testing import FakeBotAPIServer

from ..conftest import RedisServer
from .polling import StartBot, assert_clean_log, wait_for_log
from .test_bot_timers_e2e import ALICE, reminders, to_hungry_with_pizza

BOB = ALICE + 1
DEADLINE = 0.5  # WEBHOOK_REDIS_DEADLINE: timers wait on Redis as long as deliveries do
OUTAGE = "timers wait for Redis"
#: A bot whose Redis calls fail fast (as FROZEN's do not), and whose reminders come soon.
SETTINGS = {
    "REDIS_SOCKET_TIMEOUT": "1",
    "REDIS_RETRIES": "0",
    "WEBHOOK_REDIS_DEADLINE": str(DEADLINE),
    "LOCK_TTL": "20",
    "LOCK_WAIT_TIMEOUT": "20",
    "CART_REMINDER_AFTER": "2",
    "CART_EXPIRES_AFTER": "0",
}
#: The scheduler of a busy test machine, on top of the bound the bot promises.
SLACK = 1.5


@pytest.fixture
async def redis_server(
    start_redis: Callable[..., RedisServer],
) -> AsyncIterator[tuple[RedisServer, Redis]]:
    server = start_redis()
    client = Redis.from_url(server.url)
    try:
        yield server, client
    finally:
        await client.aclose()


async def alice_waits_for_her_lock(bot_api: FakeBotAPIServer, redis: Redis, state_key: str) -> str:
    """Alice and Bob in the cart; Alice's lock held by another process when her reminder
    fires, so her firing is waiting on Redis (for the lock) when the test freezes it."""
    await to_hungry_with_pizza(bot_api, ALICE)
    # Jinja renders this file: no doubled braces.
    lock = f"{state_key}:" + "{" + str(ALICE) + "}:lock"
    await redis.set(lock, "0123abcd:1", px=15_000)  # a token of another process
    await to_hungry_with_pizza(bot_api, BOB)
    # Alice's reminder was armed first: it was claimed no later than Bob's, which went out.
    await bot_api.wait_for(lambda: reminders(bot_api, BOB) == 1, 15, "Bob's reminder")
    return lock


async def test_a_reminder_cut_while_redis_is_frozen_goes_out_once_when_it_answers(
    bot_api: FakeBotAPIServer,
    start_bot: StartBot,
    redis_server: tuple[RedisServer, Redis],
    state_key: str,
) -> None:
    server, redis = redis_server
    bot = await start_bot(REDIS_URL=server.url, **SETTINGS)
    lock = await alice_waits_for_her_lock(bot_api, redis, state_key)
    with server.frozen():
        await wait_for_log(bot, OUTAGE, DEADLINE + PROBE_TIMEOUT + CANCEL_GRACE + 5 * SLACK)
        assert reminders(bot_api, ALICE) == 0
    await redis.delete(lock)  # the other process is done with Alice
    await bot_api.wait_for(lambda: reminders(bot_api, ALICE) == 1, 10, "Alice's reminder")
    await asyncio.sleep(1.0)  # a second firing would come within the next polls
    assert reminders(bot_api, ALICE) == 1
    assert reminders(bot_api, BOB) == 1
    assert await bot.stop(signal.SIGTERM) == 0
    log = bot.log()
    assert log.count(OUTAGE) == 1
    assert "Redis answers again: 1 due timer(s) given back" in log
    assert_clean_log(bot)


async def test_sigterm_while_redis_is_frozen_does_not_wait_for_it(
    bot_api: FakeBotAPIServer,
    start_bot: StartBot,
    redis_server: tuple[RedisServer, Redis],
    state_key: str,
) -> None:
    """Alice's reminder is claimed and its firing stuck on a Redis that does not answer (nor
    time out: a socket timeout of a minute): SIGTERM does not wait SHUTDOWN_TIMEOUT for it,
    only WEBHOOK_REDIS_DEADLINE and a PING; the reminder's claim expires for the next process.
    """
    server, redis = redis_server
    bot = await start_bot(
        REDIS_URL=server.url, **{**SETTINGS, "REDIS_SOCKET_TIMEOUT": "60"}, SHUTDOWN_TIMEOUT="20"
    )
    lock = await alice_waits_for_her_lock(bot_api, redis, state_key)
    with server.frozen():
        started = time.monotonic()
        code = await bot.stop(signal.SIGTERM)
        took = time.monotonic() - started
    assert code == 0
    assert took < DEADLINE + PROBE_TIMEOUT + CANCEL_GRACE + SLACK, took
    assert reminders(bot_api, ALICE) == 0
    assert "Traceback" not in bot.log()
    await redis.delete(lock)
