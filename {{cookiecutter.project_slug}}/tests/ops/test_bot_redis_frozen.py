"""Nothing hangs while Redis does (webhook mode): a frozen redis-server (SIGSTOP), a real bot.

A delivery whose step can't be stored within WEBHOOK_REDIS_DEADLINE while Redis does not
answer a PING is answered 503 with Retry-After, and Telegram's re-delivery of it, once Redis
is back, is handled exactly once (see docs/guarantees.md).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from redis.asyncio import Redis

from botnodes.telegram.webhook import CANCEL_GRACE, READY_TIMEOUT
from botnodes.testing import FakeBotAPIServer

from ..conftest import RedisServer
from .polling import ALICE, current_node
from .replicas import FROZEN, PATH, SECRET, Replica, StartReplica, frozen, say, update

DEADLINE = 1.0  # WEBHOOK_REDIS_DEADLINE of the replica under test
#: The scheduler of a busy test machine, on top of the bound the server promises.
SLACK = 1.5


async def post_with_headers(replica: Replica, body: dict[str, Any]) -> tuple[int, str | None]:
    """The delivery's status and its Retry-After header."""
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    async with (
        aiohttp.ClientSession() as session,
        session.post(replica.base + PATH, json=body, headers=headers) as reply,
    ):
        return reply.status, reply.headers.get("Retry-After")


async def test_a_delivery_redis_cant_store_gets_503_in_time_and_its_redelivery_runs_once(
    bot_api: FakeBotAPIServer,
    start_replica: StartReplica,
    start_redis: Callable[..., RedisServer],
    state_key: str,
) -> None:
    redis_server = start_redis()
    replica = await start_replica(
        REDIS_URL=redis_server.url, WEBHOOK_REDIS_DEADLINE=str(DEADLINE), **FROZEN
    )
    await say(bot_api, replica, "hi", 1)
    await say(bot_api, replica, "Yes", 2)
    pizza = update("Pizza")
    before = len(bot_api.sent_texts(ALICE))
    with frozen(redis_server):
        started = time.monotonic()
        assert await post_with_headers(replica, pizza) == (503, "1")
        took = time.monotonic() - started
        assert took < DEADLINE + READY_TIMEOUT + CANCEL_GRACE + SLACK, took
        assert await replica.get("/readyz") == (503, "not ready: Redis does not answer")
        assert await replica.get("/healthz") == (200, "ok")
    assert bot_api.sent_texts(ALICE)[before:] == []  # nothing of the cut step went out
    assert f"update {pizza['update_id']} answered 503 (Telegram re-sends)" in replica.process.log()

    await replica.wait_ready()
    assert await replica.post(pizza) == 200  # Telegram's re-delivery
    assert await replica.post(pizza) == 200  # and one more: already handled, skipped
    assert bot_api.sent_texts(ALICE)[before:] == [
        "Added Pizza",
        "What are you gonna order? Cart: Pizza",
    ]
    redis = Redis.from_url(redis_server.url)
    try:
        node = await current_node(redis, state_key, ALICE)
    finally:
        await redis.aclose()
    assert node._data.order == ["Pizza"]
    assert await replica.process.stop(signal.SIGTERM) == 0
    assert "Traceback" not in replica.process.log()
