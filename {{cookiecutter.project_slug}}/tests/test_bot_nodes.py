"""The food bot's nodes, texts and routing through the real Dispatcher, real botnodes and Redis.

Written with the bot's own test client (`{{ cookiecutter.project_slug }}.testing`), the way
tests of your own nodes are: only Telegram is faked (in process, with Telegram's rules), and
the food API is a recording stand-in because its HTTP client has its own tests.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from botnodes.testing import BotTestClient, TestUser, message_update

from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.nodes import Hold, Hungry, Start
from {{ cookiecutter.project_slug }}.settings import Settings

from .conftest import RecordingFoodAPI, free_port, make_settings
from .english import NOT_TEXT_TEXT, STATE_UNAVAILABLE_TEXT

ALICE = 1001
BOB = 1002

GREETING = "Hello, alice! Are you hungry?"
MAIN_MENU = "Again main menu! Are you hungry?"
EMPTY_CART = "What are you gonna order? Cart: Empty"


@pytest.fixture
def alice(client: BotTestClient) -> TestUser:
    return client.user(ALICE, username="alice")


async def say(user: TestUser, text: str | None) -> list[str]:
    """Send `text` as `user`; the texts the bot answered with."""
    return [reply.text for reply in await user.send(text)]


async def to_hungry(user: TestUser, *items: str) -> None:
    await say(user, "hi")
    await say(user, "Yes")
    for item in items:
        await say(user, item)


async def test_first_message_greets_by_username_and_is_not_handled_as_an_answer(
    alice: TestUser,
) -> None:
    assert await say(alice, "Yes") == [GREETING]
    assert isinstance(await alice.node(), Start)


async def test_greeting_falls_back_to_the_full_name_without_a_username(
    client: BotTestClient,
) -> None:
    bob = client.user(BOB, username=None, first_name="Bob", last_name="Smith")
    assert await say(bob, "hi") == ["Hello, Bob Smith! Are you hungry?"]


async def test_start_yes_goes_to_hungry_with_an_empty_cart(alice: TestUser) -> None:
    await say(alice, "hi")
    assert await say(alice, "Yes") == ["No worries, I've got you back!", EMPTY_CART]
    node = await alice.node()
    assert isinstance(node, Hungry)
    assert node._data.order == []


async def test_start_no_goes_to_hold_silently(alice: TestUser) -> None:
    await say(alice, "hi")
    assert await say(alice, "No") == ["Write me when you are ready then!"]
    assert isinstance(await alice.node(), Hold)


async def test_start_anything_else_asks_again(alice: TestUser) -> None:
    await say(alice, "hi")
    assert await say(alice, "Maybe") == ["Say what?", MAIN_MENU]
    assert isinstance(await alice.node(), Start)


async def test_hungry_adds_items_to_the_stored_cart(alice: TestUser) -> None:
    await to_hungry(alice)
    assert await say(alice, "Pizza") == ["Added Pizza", "What are you gonna order? Cart: Pizza"]
    assert await say(alice, "Cola") == [
        "Added Cola",
        "What are you gonna order? Cart: Pizza, Cola",
    ]
    node = await alice.node()
    assert isinstance(node, Hungry)
    assert node._data.order == ["Pizza", "Cola"]


async def test_finish_orders_through_the_food_api_and_returns_to_the_menu(
    alice: TestUser, food_api: RecordingFoodAPI
) -> None:
    await to_hungry(alice, "Pizza", "Cola")
    assert await say(alice, "Finish") == ["Ordering Pizza, Cola", "Ordered!", MAIN_MENU]
    assert food_api.orders == [(ALICE, ["Pizza", "Cola"])]
    assert isinstance(await alice.node(), Start)


async def test_finish_with_an_empty_cart_stays_hungry(
    alice: TestUser, food_api: RecordingFoodAPI
) -> None:
    await to_hungry(alice)
    assert await say(alice, "Finish") == [
        "Cart is empty! Write Cancel to cancel the order",
        EMPTY_CART,
    ]
    assert food_api.orders == []
    assert isinstance(await alice.node(), Hungry)


async def test_failed_order_says_error_logs_the_user_and_returns_to_the_menu(
    alice: TestUser, food_api: RecordingFoodAPI, caplog: pytest.LogCaptureFixture
) -> None:
    await to_hungry(alice, "Pizza")
    food_api.fail = True
    with caplog.at_level(logging.ERROR, logger="test_bot"):
        assert await say(alice, "Finish") == ["Ordering Pizza", "Error", MAIN_MENU]
    assert any(
        str(ALICE) in record.getMessage() and "HTTP 500" in record.getMessage()
        for record in caplog.records
    )
    assert isinstance(await alice.node(), Start)


async def test_cancel_drops_the_cart(alice: TestUser, food_api: RecordingFoodAPI) -> None:
    await to_hungry(alice, "Pizza")
    assert await say(alice, "Cancel") == ["Order cancelled!", MAIN_MENU]
    assert food_api.orders == []
    assert isinstance(await alice.node(), Start)


async def test_hold_returns_to_the_menu_on_any_message(alice: TestUser) -> None:
    await say(alice, "hi")
    await say(alice, "No")
    assert await say(alice, "anything") == [MAIN_MENU]
    assert isinstance(await alice.node(), Start)


async def test_start_command_greets_and_resets_from_any_node(alice: TestUser) -> None:
    await to_hungry(alice, "Pizza")
    assert await say(alice, "/start") == [GREETING]
    assert isinstance(await alice.node(), Start)
    # The menu works as usual afterwards, and the old cart is gone.
    assert await say(alice, "Yes") == ["No worries, I've got you back!", EMPTY_CART]


async def test_start_command_works_for_a_new_user(alice: TestUser) -> None:
    assert await say(alice, "/start") == [GREETING]
    assert isinstance(await alice.node(), Start)


async def test_non_text_message_gets_a_hint_and_keeps_the_state(alice: TestUser) -> None:
    await to_hungry(alice, "Pizza")
    assert await say(alice, None) == [NOT_TEXT_TEXT]
    node = await alice.node()
    assert isinstance(node, Hungry)
    assert node._data.order == ["Pizza"]


async def test_group_messages_are_ignored(client: BotTestClient, alice: TestUser) -> None:
    for text in ("hi", "/start"):
        await client.feed(message_update(client.next_update_id(), ALICE, text, chat_type="group"))
    assert client.telegram.calls == []
    assert await alice.node() is None


async def test_users_have_separate_states(client: BotTestClient, alice: TestUser) -> None:
    bob = client.user(BOB, username="bob")
    await to_hungry(alice, "Pizza")
    assert await say(bob, "hi") == ["Hello, bob! Are you hungry?"]
    assert await say(alice, "Soup") == ["Added Soup", "What are you gonna order? Cart: Pizza, Soup"]
    assert isinstance(await bob.node(), Start)


async def test_state_survives_a_restart(redis_client: Redis, settings: Settings) -> None:
    async with BotTestClient.start(BOT, settings, redis=redis_client) as first:
        await to_hungry(first.user(ALICE), "Pizza")
    async with BotTestClient.start(BOT, settings, redis=redis_client) as restarted:
        assert await say(restarted.user(ALICE), "Cola") == [
            "Added Cola",
            "What are you gonna order? Cart: Pizza, Cola",
        ]


async def test_a_burst_of_items_keeps_every_item(alice: TestUser) -> None:
    await to_hungry(alice)
    items = [f"item{i}" for i in range(30)]
    await asyncio.gather(*(alice.send(item) for item in items))
    node = await alice.node()
    assert isinstance(node, Hungry)
    assert sorted(node._data.order) == sorted(items)


@pytest.mark.ops
async def test_unreachable_redis_gets_a_please_try_again_answer(state_key: str) -> None:
    settings = make_settings(state_key, url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"))
    async with BotTestClient.start(BOT, settings) as client:
        alice = client.user(ALICE)
        assert await say(alice, "hi") == [STATE_UNAVAILABLE_TEXT]
        assert await say(alice, "/start") == [STATE_UNAVAILABLE_TEXT]


async def test_state_ttl_slides_with_every_event_and_then_expires(
    redis_client: Redis, state_key: str
) -> None:
    settings = make_settings(state_key, state_ttl=1.0)
    async with BotTestClient.start(BOT, settings, redis=redis_client) as client:
        await check_sliding_ttl(client.user(ALICE))


async def check_sliding_ttl(alice: TestUser) -> None:
    await to_hungry(alice, "Pizza")
    for item in ("Cola", "Soup"):  # 1.2 s in all, longer than the TTL
        await asyncio.sleep(0.6)
        assert (await say(alice, item))[0] == f"Added {item}"
    node = await alice.node()
    assert isinstance(node, Hungry)
    assert node._data.order == ["Pizza", "Cola", "Soup"]
    await asyncio.sleep(1.2)  # past the TTL since the last event, however late the wake-up
    assert await say(alice, "Fries") == [GREETING]
