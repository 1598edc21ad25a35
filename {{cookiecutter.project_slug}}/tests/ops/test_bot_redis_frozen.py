"""Nothing hangs while Redis does: a frozen redis-server (SIGSTOP), a real bot.

A delivery whose step can't be stored within WEBHOOK_REDIS_DEADLINE while Redis does not
answer a PING is answered 503 with Retry-After, and Telegram's re-delivery of it, once Redis
is back, is handled exactly once (see docs/guarantees.md). In polling mode the user is told
to try again within REDIS_SOCKET_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from redis.asyncio import Redis

from botnodes.redis_watch import CANCEL_GRACE
from botnodes.telegram.webhook import READY_TIMEOUT
from botnodes.testing import FakeBotAPIServer

from ..conftest import RedisServer
from ..english import STATE_UNAVAILABLE_TEXT
from ..test_bot_food_api import OrderServer
from .polling import (
    ALICE,
    EMPTY_CART,
    GREETING,
    MAIN_MENU,
    StartBot,
    assert_clean_log,
    current_node,
)
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


#: A polling bot's bound on one Redis call: REDIS_SOCKET_TIMEOUT, with no retry.
SOCKET_TIMEOUT = 1.0


async def test_a_polling_update_redis_does_not_answer_is_told_try_again_in_time(
    bot_api: FakeBotAPIServer,
    start_bot: StartBot,
    start_redis: Callable[..., RedisServer],
    state_key: str,
) -> None:
    """Polling has no 503 to give: the user is told to try again within the socket timeout,
    the step is not stored, and the next message, once Redis answers, goes on from the cart."""
    redis_server = start_redis()
    bot = await start_bot(
        REDIS_URL=redis_server.url, REDIS_SOCKET_TIMEOUT=str(SOCKET_TIMEOUT), REDIS_RETRIES="0"
    )
    assert await bot_api.say(ALICE, "hi", 1) == [GREETING]
    assert (await bot_api.say(ALICE, "Yes", 2))[1] == EMPTY_CART
    with frozen(redis_server):
        started = time.monotonic()
        assert await bot_api.say(ALICE, "Pizza", 1) == [STATE_UNAVAILABLE_TEXT]
        took = time.monotonic() - started
        assert took < 2 * SOCKET_TIMEOUT + SLACK, took
        assert bot.running
    assert await bot_api.say(ALICE, "Pizza", 2) == [
        "Added Pizza",
        "What are you gonna order? Cart: Pizza",
    ]
    redis = Redis.from_url(redis_server.url)
    try:
        node = await current_node(redis, state_key, ALICE)
    finally:
        await redis.aclose()
    assert node._data.order == ["Pizza"]  # the frozen step stored nothing
    assert await bot.stop(signal.SIGTERM) == 0
    assert "Redis unavailable for user 5001" in bot.log()
    assert_clean_log(bot)


async def test_a_stored_delivery_is_answered_in_time_while_redis_freezes_before_its_lease_is_back(
    bot_api: FakeBotAPIServer,
    start_replica: StartReplica,
    start_redis: Callable[..., RedisServer],
) -> None:
    """The user's Finish is stored, the order goes to a slow food API, Redis freezes: the
    delivery is answered 200 within the deadline's bound, not when Redis answers again, and the
    replies go out meanwhile; once Redis answers, Telegram's re-delivery is skipped as handled."""
    redis_server = start_redis()
    food_api = OrderServer(delay=2.0)
    await food_api.start()
    try:
        replica = await start_replica(
            REDIS_URL=redis_server.url,
            WEBHOOK_REDIS_DEADLINE=str(DEADLINE),
            FOOD_API_URL=food_api.url,
            **FROZEN,
        )
        await say(bot_api, replica, "hi", 1)
        await say(bot_api, replica, "Yes", 2)
        await say(bot_api, replica, "Pizza", 2)
        finish = update("Finish")
        before = len(bot_api.sent_texts(ALICE))
        delivery = asyncio.create_task(post_with_headers(replica, finish))
        await asyncio.wait_for(food_api.received.wait(), 15)  # stored: the order goes out
        replies = ["Ordering Pizza", "Ordered!", MAIN_MENU]
        with frozen(redis_server):
            started = time.monotonic()
            assert await asyncio.wait_for(delivery, 30) == (200, None)
            took = time.monotonic() - started
            assert took < food_api.delay + DEADLINE + READY_TIMEOUT + SLACK, took
            # The last reply's turn in the chat's budget is not waited for past 2 s: all go out.
            await bot_api.wait_for(
                lambda: len(bot_api.sent_texts(ALICE)) >= before + len(replies), 10, "replies"
            )
            assert bot_api.sent_texts(ALICE)[before:] == replies
        assert f"after update {finish['update_id']} was stored: answered 200" in (
            replica.process.log()
        )
        await replica.wait_ready()
        assert await replica.post(finish) == 200  # Telegram's re-delivery: already handled
        assert bot_api.sent_texts(ALICE)[before:] == replies
        assert len(food_api.orders) == 1
        assert await replica.process.stop(signal.SIGTERM) == 0
    finally:
        await food_api.close()
