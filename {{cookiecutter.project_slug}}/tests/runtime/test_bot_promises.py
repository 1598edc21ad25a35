"""The bot's promises at the edges, through the real dispatcher, botnodes and Redis.

Re-delivered updates, a user back after STATE_TTL, bounded carts, orders only for stored
steps, and one chat's flood control never holding up another (see docs/guarantees.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from botnodes.telegram.settings import RuntimeSettings, StateSettings, TelegramSettings
from botnodes.testing import BotTestClient, FakeTelegram, TestUser, callback_update, message_update

from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.nodes import Hungry
from {{ cookiecutter.project_slug }}.nodes.hungry import cart_text
from {{ cookiecutter.project_slug }}.settings import CartSettings, Settings

from ..conftest import TOKEN, RecordingFoodAPI
from ..english import STATE_TOO_LARGE_TEXT, STATE_UNAVAILABLE_TEXT

ALICE = 1001
BOB = 1002
CAROL = 1003
MAIN_MENU = "Again main menu! Are you hungry?"


def texts(replies: Sequence[Any]) -> list[str]:
    return [reply.text for reply in replies]


async def in_cart(user: TestUser, *items: str) -> None:
    await user.send("hi")
    await user.click("Yes")
    for item in items:
        await user.send(item)


# 1. One event per user at a time, in arrival order ---------------------------------------------


async def test_a_brand_new_users_burst_keeps_its_arrival_order(client: BotTestClient) -> None:
    # Nothing is awaited ahead of the user's queue (their registration for broadcasts and
    # their language read run beside the update), so a user nobody has seen yet keeps the
    # order their first updates arrived in.
    items = [f"dish{n}" for n in range(18)]
    burst = [message_update(client.next_update_id(), ALICE, t) for t in ["hi", "Yes", *items]]
    await asyncio.gather(*(client.feed(update) for update in burst))
    node = await client.nodes.user(ALICE).get_node()
    assert isinstance(node, Hungry)
    assert node._data.order == items
    added = [
        reply
        for n, item in enumerate(items, 1)
        for reply in (f"Added {item}", f"What are you gonna order? Cart: {cart_text(items[:n])}")
    ]
    assert client.telegram.sent_texts(ALICE) == [
        "Hello, alice! Are you hungry?",
        "No worries, I've got you back!",
        "What are you gonna order? Cart: Empty",
        *added,
    ]


# 2. A re-delivered update runs once ----------------------------------------------------------


async def test_a_redelivered_message_press_or_start_runs_once(
    client: BotTestClient, alice: TestUser, food_api: RecordingFoodAPI
) -> None:
    start = message_update(client.next_update_id(), ALICE, "/start")
    await client.feed(start)
    await client.feed(start)  # Telegram sends it again: no answer reached it
    assert texts(alice.replies()) == ["Hello, alice! Are you hungry?"]
    await alice.click("Yes")
    pizza = message_update(client.next_update_id(), ALICE, "Pizza")
    for _ in range(3):
        await client.feed(pizza)
    node = await alice.node()
    assert isinstance(node, Hungry)
    assert node._data.order == ["Pizza"]
    finish = client.telegram.press_update(client.next_update_id(), ALICE, "Finish")
    await client.feed(finish)
    await client.feed(finish)
    assert food_api.orders == [(ALICE, ["Pizza"])]
    assert texts(alice.replies()).count("Ordered!") == 1


async def test_a_redelivery_to_another_replica_runs_once(
    settings: Settings, redis_client: Redis, food_api: RecordingFoodAPI
) -> None:
    telegram = FakeTelegram()
    async with (
        BotTestClient.start(
            BOT, settings, redis=redis_client, food_api=food_api, telegram=telegram
        ) as one,
        BotTestClient.start(
            BOT, settings, redis=redis_client, food_api=food_api, telegram=telegram
        ) as two,
    ):
        alice = one.user(ALICE)
        await in_cart(alice, "Pizza")
        finish = telegram.press_update(one.next_update_id(), ALICE, "Finish")
        await asyncio.gather(one.feed(finish), two.feed(finish))
        assert food_api.orders == [(ALICE, ["Pizza"])]
        assert texts(alice.replies()).count("Ordered!") == 1


# 3. Idempotency keys and buttons are never reused --------------------------------------------


@pytest.mark.ops  # waits out real seconds of flood control, timeouts or TTL
async def test_a_user_back_after_state_ttl_gets_new_keys_and_old_buttons_are_stale(
    settings: Settings, redis_client: Redis, food_api: RecordingFoodAPI
) -> None:
    expiring = dataclasses.replace(
        settings,
        state=StateSettings(
            state_key=settings.state.state_key, state_ttl=0.5, lock_wait_timeout=5, _env_file=None
        ),
    )
    async with BotTestClient.start(BOT, expiring, redis=redis_client, food_api=food_api) as client:
        alice = client.user(ALICE)
        await alice.send("hi")
        yesterday = client.telegram.delivered(ALICE)[-1]  # "Hello ... hungry?" with Yes/No
        await alice.click("Yes")
        await alice.send("Pizza")
        await alice.click("Finish")
        await asyncio.sleep(0.8)  # STATE_TTL passes: alice starts over
        await alice.send("hi")
        await alice.click("Yes")
        await alice.send("Sushi")
        # Yesterday's "No" (shown on the first greeting) must not act on today's cart.
        press = callback_update(
            client.next_update_id(),
            ALICE,
            yesterday["reply_markup"]["inline_keyboard"][0][1]["callback_data"],
            yesterday,
            f"old-{time.time_ns()}",
        )
        await client.feed(press)
        node = await alice.node()
        assert isinstance(node, Hungry)
        assert node._data.order == ["Sushi"]
        await alice.click("Finish")
    assert food_api.orders == [(ALICE, ["Pizza"]), (ALICE, ["Sushi"])]
    assert len(set(food_api.keys)) == 2, food_api.keys


# 4. Bounded input, bounded cost ---------------------------------------------------------------


async def test_a_dish_name_over_the_limit_is_refused_and_the_cart_kept(
    client: BotTestClient, alice: TestUser
) -> None:
    await in_cart(alice, "Pizza")
    limit = client.nodes._ctx.settings.cart.max_dish_name_length
    replies = await alice.send("x" * (limit + 1))
    assert texts(replies) == [
        f"That's a long name! A dish name has at most {limit} characters: please write it shorter."
    ]
    node = await alice.node()
    assert isinstance(node, Hungry)
    assert node._data.order == ["Pizza"]
    assert texts(await alice.send("x" * limit))[0] == "Added " + "x" * limit


async def test_a_full_cart_refuses_more_and_finish_still_orders(
    settings: Settings, redis_client: Redis, food_api: RecordingFoodAPI
) -> None:
    small = dataclasses.replace(settings, cart=CartSettings(max_cart_items=3, _env_file=None))
    async with BotTestClient.start(BOT, small, redis=redis_client, food_api=food_api) as client:
        alice = client.user(ALICE)
        await in_cart(alice, "a", "b", "c")
        assert texts(await alice.send("d")) == [
            "Your cart is full (3 items). Write Finish to order it or Cancel to start over."
        ]
        await alice.click("Finish")
    assert food_api.orders == [(ALICE, ["a", "b", "c"])]


async def test_a_long_cart_stays_one_message_per_reply(
    settings: Settings, redis_client: Redis, food_api: RecordingFoodAPI
) -> None:
    roomy = dataclasses.replace(
        settings, cart=CartSettings(max_dish_name_length=1000, max_cart_items=300, _env_file=None)
    )
    items = [f"dish {n} " + "very " * 150 + "tasty" for n in range(60)]
    async with BotTestClient.start(BOT, roomy, redis=redis_client, food_api=food_api) as client:
        alice = client.user(ALICE)
        await in_cart(alice)
        for item in items:
            replies = await alice.send(item)
            assert len(replies) == 2  # "Added ..." and the cart: never split
        calls = len(client.telegram.calls)
        assert len(texts(await alice.send("one more"))) == 2
        assert len(client.telegram.calls) - calls == 2
        shown = alice.replies()[-1].text
        assert len(shown) < 1100
        assert shown.startswith("What are you gonna order? Cart: 61 items, the last ")
        assert shown.endswith(", one more")
        replies = await alice.click("Finish")
        assert texts(replies)[1:] == ["Ordered!", MAIN_MENU]
        assert texts(replies)[0] == f"Ordering {cart_text([*items, 'one more'])}"
    assert food_api.orders == [(ALICE, [*items, "one more"])]


def test_cart_text_shows_the_newest_items_within_its_budget() -> None:
    assert cart_text(["Pizza", "Cola"]) == "Pizza, Cola"
    long = [f"item{n:03}" for n in range(500)]
    text = cart_text(long, budget=100)
    assert len(text) <= 100
    assert text.startswith("500 items, the last ")
    assert text.endswith("item498, item499")
    one_huge = cart_text(["x" * 5000], budget=100)
    assert len(one_huge) <= 100
    assert one_huge.endswith("…")


async def test_a_step_over_state_max_bytes_is_told_and_changes_nothing(
    settings: Settings, redis_client: Redis, food_api: RecordingFoodAPI
) -> None:
    tight = dataclasses.replace(
        settings,
        state=StateSettings(
            state_key=settings.state.state_key, state_max_bytes=400, _env_file=None
        ),
        cart=CartSettings(max_dish_name_length=1000, _env_file=None),
    )
    async with BotTestClient.start(BOT, tight, redis=redis_client, food_api=food_api) as client:
        alice = client.user(ALICE)
        await in_cart(alice, "Pizza")
        assert texts(await alice.send("x" * 500)) == [STATE_TOO_LARGE_TEXT]
        node = await alice.node()
        assert isinstance(node, Hungry)
        assert node._data.order == ["Pizza"]
        await alice.click("Finish")
    assert food_api.orders == [(ALICE, ["Pizza"])]


# 8. No side effect for a step that was not stored ------------------------------------------


class StateCheckingFoodAPI(RecordingFoodAPI):
    """Records which node the user was stored on when their order arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.client: BotTestClient | None = None
        self.stored_at_order: list[str] = []

    async def order_food(self, user_id: int, items: Sequence[str], *, idempotency_key: str) -> None:
        assert self.client is not None
        node = await self.client.nodes.user(user_id).get_node()
        self.stored_at_order.append(type(node).__name__)
        await super().order_food(user_id, items, idempotency_key=idempotency_key)


async def test_the_order_goes_out_only_once_its_step_is_stored(
    settings: Settings, redis_client: Redis
) -> None:
    food_api = StateCheckingFoodAPI()
    async with BotTestClient.start(BOT, settings, redis=redis_client, food_api=food_api) as client:
        food_api.client = client
        alice = client.user(ALICE)
        await in_cart(alice, "Pizza")
        assert texts(await alice.click("Finish")) == ["Ordering Pizza", "Ordered!", MAIN_MENU]
    # The user was already stored on the main menu: a refused step would have ordered nothing.
    assert food_api.stored_at_order == ["Start"]


# 5. One user's Telegram trouble never delays another -------------------------------------


def chat_is(*chat_ids: int) -> Any:
    return lambda params: params.get("chat_id") in chat_ids


@pytest.mark.ops  # waits out real seconds of flood control, timeouts or TTL
async def test_flood_control_in_two_chats_holds_up_neither_a_third_user_nor_their_next_step(
    settings: Settings, redis_client: Redis, food_api: RecordingFoodAPI
) -> None:
    two_slots = dataclasses.replace(
        settings,
        runtime=RuntimeSettings(max_concurrent_updates=2, _env_file=None),
        state=StateSettings(
            state_key=settings.state.state_key, lock_wait_timeout=1, _env_file=None
        ),
    )
    telegram = FakeTelegram()
    async with BotTestClient.start(
        BOT, two_slots, redis=redis_client, food_api=food_api, telegram=telegram
    ) as client:
        alice, bob, carol = (client.user(uid) for uid in (ALICE, BOB, CAROL))
        for user in (alice, bob, carol):
            await in_cart(user)
        telegram.fail("sendMessage", status=429, retry_after=3, times=2, match=chat_is(ALICE, BOB))
        flooded = [asyncio.create_task(user.send("Pizza")) for user in (alice, bob)]
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        assert texts(await carol.send("Soup"))[0] == "Added Soup"
        assert time.perf_counter() - started < 1.0  # not behind the 3 s of flood control
        # Alice writes again while her replies wait: her step waits its turn (longer than
        # LOCK_WAIT_TIMEOUT) and is not refused as a Redis failure.
        next_step = asyncio.create_task(alice.send("Cola"))
        await asyncio.gather(*flooded, next_step)
        assert STATE_UNAVAILABLE_TEXT not in texts(alice.replies())
        assert texts(alice.replies())[-4:] == [
            "Added Pizza",
            "What are you gonna order? Cart: Pizza",
            "Added Cola",
            "What are you gonna order? Cart: Pizza, Cola",
        ]


@dataclasses.dataclass
class WatchedTelegram(FakeTelegram):
    """The stand-in, and an event set whenever it was called: a test awaits what it waits for."""

    called: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def answer(self, method: str, params: Mapping[str, Any]) -> Any:
        try:
            return super().answer(method, params)
        finally:
            self.called.set()

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.called.clear()
                await self.called.wait()


async def test_a_timer_reply_in_flood_control_holds_up_no_other_users_timer(
    settings: Settings, redis_client: Redis, food_api: RecordingFoodAPI
) -> None:
    telegram = WatchedTelegram()
    async with BotTestClient.start(
        BOT, settings, redis=redis_client, food_api=food_api, telegram=telegram
    ) as client:
        slow, *others = (client.user(uid) for uid in range(ALICE, ALICE + 6))
        await in_cart(slow, "Pizza")
        client.clock.now += 10  # the others' reminders fall due 10 s after the slow one's
        for user in others:
            await in_cart(user, "Soup")
        reminder_after = client.nodes._ctx.settings.cart.cart_reminder_after.total_seconds()
        slow_reminder = "Still hungry? Your cart: Pizza"
        telegram.fail(
            "sendMessage",
            status=429,
            retry_after=20,
            match=lambda params: params["text"] == slow_reminder,
        )

        def reminded() -> list[int]:
            return [
                telegram.sent_texts(user.user_id).count("Still hungry? Your cart: Soup")
                for user in others
            ]

        timers = asyncio.create_task(client.nodes.run_timers())
        try:
            client.clock.now += reminder_after - 10 + 1  # only the slow chat's reminder is due
            await telegram.until(lambda: any(not c.ok for c in telegram.attempts("sendMessage")))
            client.clock.now += 10  # now the others' fall due, while the slow one waits 20 s
            await telegram.until(lambda: 0 not in reminded())
            # Every other user was reminded while the slow chat's firing still ran.
            assert slow_reminder not in telegram.sent_texts(slow.user_id)
            assert client.nodes.timer_firings >= 1
            await asyncio.sleep(3 * client.nodes.settings.timer_poll_interval)  # more looks
            assert reminded() == [1] * len(others)
            assert client.nodes.timer_firings == 1  # the slow chat's, still waiting
        finally:
            timers.cancel()
            await client.nodes.abandon_timers()  # as a shutdown cuts the 20 s wait
        # The slow user's timer fired once too: stored as reminded, its reply tried once.
        node = await slow.node()
        assert isinstance(node, Hungry)
        assert node._data.reminded
        tried = [call.params["text"] for call in telegram.attempts("sendMessage")]
        assert tried.count(slow_reminder) == 1


@pytest.mark.ops  # waits out real seconds of flood control, timeouts or TTL
async def test_every_bot_api_call_ends_within_the_call_timeout(
    settings: Settings, redis_client: Redis, food_api: RecordingFoodAPI
) -> None:
    quick = dataclasses.replace(
        settings,
        telegram=TelegramSettings(
            bot_token=SecretStr(TOKEN), telegram_call_timeout=1, _env_file=None
        ),
    )
    telegram = FakeTelegram()
    async with BotTestClient.start(
        BOT, quick, redis=redis_client, food_api=food_api, telegram=telegram
    ) as client:
        alice = client.user(ALICE)
        await in_cart(alice)
        telegram.fail("sendMessage", stall=True, times=100)  # a Bot API that never answers
        started = time.perf_counter()
        async with asyncio.timeout(10):
            await alice.send("Pizza")
        assert time.perf_counter() - started < 1 + 1 + 1  # two replies, one second each at most
        node = await alice.node()
        assert isinstance(node, Hungry)
        assert node._data.order == ["Pizza"]  # the step was stored; its replies timed out


@pytest.fixture
def alice(client: BotTestClient) -> TestUser:
    return client.user(ALICE, username="alice")
