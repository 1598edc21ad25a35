"""End to end: `python -m <bot>` as a subprocess against a fake Bot API server on 127.0.0.1.

Real process, real signals, real Redis; only Telegram (and the food API) are stand-ins.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from botnodes.testing import FakeBotAPIServer

from {{ cookiecutter.project_slug }}.nodes import Start
from {{ cookiecutter.project_slug }}.nodes.hungry import cart_text

from ..conftest import RedisServer, free_port
from ..english import STATE_UNAVAILABLE_TEXT, USER_BUSY_TEXT
from ..test_bot_food_api import OrderServer
from .polling import (
    ALICE,
    EMPTY_CART,
    GREETING,
    MAIN_MENU,
    StartBot,
    assert_clean_log,
    current_node,
    wait_for_log,
)


async def test_whole_food_flow_then_sigterm_exits_0(
    bot_api: FakeBotAPIServer, start_bot: StartBot
) -> None:
    bot = await start_bot()

    assert await bot_api.say(ALICE, "hi", 1) == [GREETING]
    assert await bot_api.say(ALICE, "Yes", 2) == ["No worries, I've got you back!", EMPTY_CART]
    assert await bot_api.say(ALICE, "Pizza", 2) == [
        "Added Pizza",
        "What are you gonna order? Cart: Pizza",
    ]
    assert await bot_api.say(ALICE, "Cola", 2) == [
        "Added Cola",
        "What are you gonna order? Cart: Pizza, Cola",
    ]
    assert await bot_api.say(ALICE, "Finish", 3) == ["Ordering Pizza, Cola", "Ordered!", MAIN_MENU]
    assert await bot_api.say(ALICE, "/start", 1) == [GREETING]
    assert await bot_api.say(ALICE, "No", 1) == ["Write me when you are ready then!"]
    assert await bot_api.say(ALICE, "anything", 1) == [MAIN_MENU]

    # Only the update types the routers handle are requested from Telegram (my_chat_member:
    # a user blocking the bot, for broadcasts).
    allowed = json.loads(bot_api.calls("getUpdates")[0].params["allowed_updates"])
    assert sorted(allowed) == ["callback_query", "message", "my_chat_member"]

    assert await bot.stop(signal.SIGTERM) == 0
    assert "for user 5001: Pizza, Cola" in bot.log()
    assert_clean_log(bot)


async def test_sigint_also_exits_0(bot_api: FakeBotAPIServer, start_bot: StartBot) -> None:
    bot = await start_bot()
    assert await bot_api.say(ALICE, "hi", 1) == [GREETING]
    assert await bot.stop(signal.SIGINT) == 0
    assert_clean_log(bot)


async def test_redis_outage_answers_try_again_and_recovers(
    bot_api: FakeBotAPIServer,
    start_bot: StartBot,
    start_redis: Callable[..., RedisServer],
) -> None:
    redis_server = start_redis()
    bot = await start_bot(REDIS_URL=redis_server.url, REDIS_RETRIES="1")
    assert await bot_api.say(ALICE, "hi", 1) == [GREETING]
    assert await bot_api.say(ALICE, "Yes", 2) == ["No worries, I've got you back!", EMPTY_CART]

    redis_server.stop()
    assert await bot_api.say(ALICE, "Pizza", 1) == [STATE_UNAVAILABLE_TEXT]
    assert await bot_api.say(ALICE, "Pizza", 1) == [STATE_UNAVAILABLE_TEXT]
    assert bot.running

    redis_server.start()  # same port, empty data: the user starts over
    assert await bot_api.say(ALICE, "Pizza", 1) == [GREETING]
    assert await bot_api.say(ALICE, "Yes", 2) == ["No worries, I've got you back!", EMPTY_CART]

    assert await bot.stop() == 0
    assert "Redis unavailable for user 5001" in bot.log()
    assert_clean_log(bot)


@pytest.fixture
async def slow_food_api() -> AsyncIterator[OrderServer]:
    server = OrderServer(delay=2.0)
    await server.start()
    yield server
    await server.close()


async def test_sigterm_during_an_order_lets_it_finish(
    bot_api: FakeBotAPIServer,
    start_bot: StartBot,
    slow_food_api: OrderServer,
    redis_client: Redis,
    state_key: str,
) -> None:
    bot = await start_bot(FOOD_API_URL=slow_food_api.url, SHUTDOWN_TIMEOUT="8")
    await bot_api.say(ALICE, "hi", 1)
    await bot_api.say(ALICE, "Yes", 2)
    await bot_api.say(ALICE, "Pizza", 2)

    finish = asyncio.create_task(bot_api.say(ALICE, "Finish", 3))
    await asyncio.wait_for(slow_food_api.received.wait(), 15)
    assert await bot.stop(signal.SIGTERM) == 0

    assert await finish == ["Ordering Pizza", "Ordered!", MAIN_MENU]
    assert [json.loads(body) for body in slow_food_api.bodies] == [
        {"user_id": ALICE, "items": ["Pizza"]}
    ]
    assert isinstance(await current_node(redis_client, state_key, ALICE), Start)
    assert "All in-flight updates finished" in bot.log()
    assert_clean_log(bot)


async def test_two_polling_processes_lose_no_item_of_a_burst(
    bot_api: FakeBotAPIServer, start_bot: StartBot, redis_client: Redis, state_key: str
) -> None:
    # 100 replies to one chat: at Telegram's 1/s the limiter would spread them over 100 s;
    # this test is about losing nothing, so the chat's budget is the largest allowed.
    fast_chat = {"CHAT_RATE": "30", "CHAT_BURST": "20"}
    first = await start_bot(**fast_chat)
    second = await start_bot(**fast_chat)
    for process in (first, second):  # `start_bot` returns once *a* process polls
        await wait_for_log(process, "Run polling")
    await bot_api.say(ALICE, "hi", 1)
    await bot_api.say(ALICE, "Yes", 2)
    bot_api.batch_size = 5  # both pollers get a share of the burst
    before = len(bot_api.sent_texts(ALICE))
    items = [f"dish{i}" for i in range(50)]
    for item in items:
        await bot_api.push_message(ALICE, item)
    await bot_api.wait_for(
        lambda: len(bot_api.sent_texts(ALICE)) >= before + 2 * len(items), 60, "100 answers"
    )

    node = await current_node(redis_client, state_key, ALICE)
    assert sorted(node._data.order) == sorted(items)
    for process in (first, second):
        assert f"transition user={ALICE} from=hungry to=hungry" in process.log()
        assert await process.stop(signal.SIGTERM) == 0
        assert_clean_log(process)


async def test_state_ttl_makes_an_idle_user_start_over(
    bot_api: FakeBotAPIServer, start_bot: StartBot
) -> None:
    bot = await start_bot(STATE_TTL="1")
    assert await bot_api.say(ALICE, "hi", 1) == [GREETING]
    assert await bot_api.say(ALICE, "Yes", 2) == ["No worries, I've got you back!", EMPTY_CART]
    await asyncio.sleep(1.5)
    # The cart expired: "Pizza" is a first message again, answered by the start node's greeting.
    assert await bot_api.say(ALICE, "Pizza", 1) == [GREETING]
    assert await bot.stop(signal.SIGTERM) == 0


async def test_the_bot_serves_from_a_redis_cluster(
    bot_api: FakeBotAPIServer, start_bot: StartBot, redis_cluster_url: str
) -> None:
    bot = await start_bot(REDIS_URL=redis_cluster_url, REDIS_CLUSTER="true")
    assert await bot_api.say(ALICE, "hi", 1) == [GREETING]
    assert await bot_api.say(ALICE, "Yes", 2) == ["No worries, I've got you back!", EMPTY_CART]
    assert await bot_api.say(ALICE, "Soup", 2) == [
        "Added Soup",
        "What are you gonna order? Cart: Soup",
    ]
    assert await bot_api.say(ALICE, "Finish", 3) == ["Ordering Soup", "Ordered!", MAIN_MENU]
    assert await bot.stop(signal.SIGTERM) == 0
    assert_clean_log(bot)


async def test_killed_while_the_food_api_takes_the_order_never_orders_the_cart_twice(
    bot_api: FakeBotAPIServer,
    start_bot: StartBot,
    slow_food_api: OrderServer,
    redis_client: Redis,
    state_key: str,
) -> None:
    slow_food_api.delay = 5.0  # longer than the test needs to kill the bot; short at teardown
    # A hard kill leaves the user's lock until it expires: keep that short here.
    bot = await start_bot(FOOD_API_URL=slow_food_api.url, LOCK_TTL="2")
    await bot_api.say(ALICE, "hi", 1)
    await bot_api.say(ALICE, "Yes", 2)
    await bot_api.say(ALICE, "Pizza", 2)
    await bot_api.push_message(ALICE, "Finish")
    await asyncio.wait_for(slow_food_api.received.wait(), 15)
    await bot.kill()  # the food API has the order; the bot dies before it answered

    # The order went out only once its step was stored: the user is on the main menu
    # already, so nothing can order this cart again (the kill cost the "Ordered!" reply).
    assert bot_api.sent_texts(ALICE)[-1] == "Ordering Pizza"
    assert isinstance(await current_node(redis_client, state_key, ALICE), Start)

    slow_food_api.delay = 0.0
    await start_bot(FOOD_API_URL=slow_food_api.url, LOCK_TTL="2")
    assert await bot_api.say(ALICE, "Finish", 2) == ["Say what?", MAIN_MENU]
    assert len(slow_food_api.bodies) == 1
    assert len(slow_food_api.orders) == 1


async def test_one_users_flood_does_not_hold_up_another_user(
    bot_api: FakeBotAPIServer, start_bot: StartBot, slow_food_api: OrderServer
) -> None:
    slow_food_api.delay = 6.0
    # 70 busy answers to one chat: at Telegram's 1/s the limiter would spread them over 70 s;
    # this test is about the flood not holding Bob up, so the chat's budget is the largest.
    bot = await start_bot(
        FOOD_API_URL=slow_food_api.url,
        MAX_CONCURRENT_UPDATES="20",
        CHAT_RATE="30",
        CHAT_BURST="20",
    )
    bob = ALICE + 1
    await bot_api.say(ALICE, "hi", 1)
    await bot_api.say(ALICE, "Yes", 2)
    await bot_api.say(ALICE, "Pizza", 2)
    await bot_api.push_message(ALICE, "Finish")
    await asyncio.wait_for(slow_food_api.received.wait(), 15)
    for n in range(120):  # Alice floods while her order is being placed
        await bot_api.push_message(ALICE, f"more {n}")

    # Bob is answered while Alice's order still waits for the food API.
    assert await bot_api.say(bob, "hi", 1) == ["Hello, alice! Are you hungry?"]
    assert slow_food_api.answered == 0

    # Alice's updates past MAX_QUEUED_PER_USER (50 waiting) were skipped politely.
    await bot_api.wait_for(
        lambda: bot_api.sent_texts(ALICE).count(USER_BUSY_TEXT) >= 70, 30, "70 busy answers"
    )
    assert await bot.stop(signal.SIGTERM) == 0
    assert bot_api.sent_texts(ALICE).count(USER_BUSY_TEXT) == 70
    assert_clean_log(bot)


async def test_redis_away_while_a_stored_order_goes_out_is_invisible_and_orders_once(
    bot_api: FakeBotAPIServer,
    start_bot: StartBot,
    slow_food_api: OrderServer,
    start_redis: Callable[..., RedisServer],
) -> None:
    redis_server = start_redis("--appendonly", "yes", "--appendfsync", "always")
    slow_food_api.delay = 1.0
    bot = await start_bot(REDIS_URL=redis_server.url, FOOD_API_URL=slow_food_api.url)
    await bot_api.say(ALICE, "hi", 1)
    await bot_api.say(ALICE, "Yes", 2)
    await bot_api.say(ALICE, "Pizza", 2)
    finish = asyncio.create_task(bot_api.say(ALICE, "Finish", 3, timeout=30))
    await asyncio.wait_for(slow_food_api.received.wait(), 15)
    redis_server.stop()  # Redis dies while the food API places the stored step's order ...
    # ... which needs no Redis: the user hears how it went and the main menu.
    assert await finish == ["Ordering Pizza", "Ordered!", MAIN_MENU]
    redis_server.start()  # ... then it is back, with its data (AOF)

    assert STATE_UNAVAILABLE_TEXT not in bot_api.sent_texts(ALICE)
    assert await bot_api.say(ALICE, "Finish", 2) == ["Say what?", MAIN_MENU]  # no 2nd order
    assert len(slow_food_api.orders) == 1
    assert await bot.stop() == 0
    assert_clean_log(bot)


async def test_the_food_flow_driven_by_presses(
    bot_api: FakeBotAPIServer, start_bot: StartBot
) -> None:
    bot = await start_bot()
    assert await bot_api.say(ALICE, "/start", 1) == [GREETING]
    assert await bot_api.press(ALICE, "Yes", 2) == ["No worries, I've got you back!", EMPTY_CART]
    assert await bot_api.press(ALICE, "Finish", 2) == [
        "Cart is empty! Write Cancel to cancel the order",
        EMPTY_CART,
    ]
    assert await bot_api.press(ALICE, "Cancel", 2) == ["Order cancelled!", MAIN_MENU]
    assert await bot_api.press(ALICE, "Yes", 2) == ["No worries, I've got you back!", EMPTY_CART]
    assert await bot_api.say(ALICE, "Pizza", 2) == [
        "Added Pizza",
        "What are you gonna order? Cart: Pizza",
    ]
    assert await bot_api.press(ALICE, "Finish", 3) == ["Ordering Pizza", "Ordered!", MAIN_MENU]
    assert await bot_api.press(ALICE, "No", 1) == ["Write me when you are ready then!"]
    await bot_api.wait_for(
        lambda: not bot_api.telegram.unanswered_presses(), 10, "every press answered"
    )
    assert await bot.stop(signal.SIGTERM) == 0
    assert [len(answers) for answers in bot_api.telegram.answers.values()] == [1] * 6
    assert_clean_log(bot)


def text_is(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda params: params["text"] == text


async def test_429_on_every_reply_of_finish_orders_once_and_delivers_everything(
    bot_api: FakeBotAPIServer, start_bot: StartBot, slow_food_api: OrderServer
) -> None:
    slow_food_api.delay = 0.0
    bot = await start_bot(FOOD_API_URL=slow_food_api.url)
    await bot_api.say(ALICE, "hi", 1)
    await bot_api.say(ALICE, "Yes", 2)
    await bot_api.say(ALICE, "Pizza", 2)
    for reply in ("Ordering Pizza", "Ordered!", MAIN_MENU):
        bot_api.telegram.fail("sendMessage", status=429, retry_after=1, match=text_is(reply))
    assert await bot_api.say(ALICE, "Finish", 3, timeout=30) == [
        "Ordering Pizza",
        "Ordered!",
        MAIN_MENU,
    ]
    assert len(slow_food_api.orders) == 1
    assert len([c for c in bot_api.calls("sendMessage") if not c.ok]) == 3
    assert await bot_api.say(ALICE, "Finish", 2) == ["Say what?", MAIN_MENU]
    assert await bot.stop() == 0
    assert bot.log().count("Telegram 429 on sendMessage: retry 1 in 1.0s") == 3
    assert_clean_log(bot)


async def test_a_cart_of_long_items_is_shown_and_ordered(
    bot_api: FakeBotAPIServer, start_bot: StartBot, slow_food_api: OrderServer
) -> None:
    slow_food_api.delay = 0.0
    bot = await start_bot(FOOD_API_URL=slow_food_api.url, MAX_DISH_NAME_LENGTH="1000")
    items = [f"{name} " + "very " * 190 + "tasty" for name in ("soup", "stew", "cake")]
    await bot_api.say(ALICE, "hi", 1)
    await bot_api.say(ALICE, "Yes", 2)
    for item in items:
        await bot_api.push_message(ALICE, item)
    cart = "What are you gonna order? Cart: " + cart_text(items)
    await bot_api.wait_for(lambda: bot_api.sent_texts(ALICE)[-1] == cart, 15, "the long cart")
    replies = await bot_api.press(ALICE, "Finish", 3)  # the cart is one message
    assert replies == ["Ordering " + cart_text(items), "Ordered!", MAIN_MENU]
    assert [json.loads(body)["items"] for body in slow_food_api.orders.values()] == [items]
    assert all(call.ok for call in bot_api.calls("sendMessage"))
    assert await bot.stop() == 0
    assert_clean_log(bot)


async def test_polling_serves_metrics_on_metrics_port(
    bot_api: FakeBotAPIServer, start_bot: StartBot
) -> None:
    port = free_port()
    bot = await start_bot(METRICS_PORT=str(port), WEBHOOK_HOST="127.0.0.1")
    assert await bot_api.say(ALICE, "hi", 1) == [GREETING]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as reply,
    ):
        assert reply.status == 200
        metrics = await reply.text()
    assert 'bot_updates_total{outcome="handled",type="message"} 1.0' in metrics
    assert 'bot_transitions_total{from_node="(new)",to_node="start"} 1.0' in metrics
    assert await bot.stop() == 0
