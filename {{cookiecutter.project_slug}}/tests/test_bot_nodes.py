"""The food bot's nodes, texts and routing through the real Dispatcher, real botnodes and Redis.

Only Telegram is faked (an in-process aiogram session); the food API is a recording stand-in
because its HTTP client has its own tests.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.types import Update
from pydantic import SecretStr
from redis.asyncio import Redis

from {{ cookiecutter.project_slug }}.config import (
    FoodApiSettings,
    RedisSettings,
    RuntimeSettings,
    Settings,
    StateSettings,
    TelegramSettings,
)
from {{ cookiecutter.project_slug }}.food_api import FoodOrderError
from {{ cookiecutter.project_slug }}.main import create_nodes
from {{ cookiecutter.project_slug }}.middlewares import STATE_UNAVAILABLE_TEXT
from {{ cookiecutter.project_slug }}.nodes import Hold, Hungry, Start
from {{ cookiecutter.project_slug }}.nodes_types import Ctx
from {{ cookiecutter.project_slug }}.redis_connection import RedisClient, create_redis
from {{ cookiecutter.project_slug }}.routers import NOT_TEXT_TEXT, build_dispatcher

from .conftest import free_port
from .fake_telegram import FakeSession, message_update

TOKEN = "123456:TEST-in-process-token"
ALICE = 1001
BOB = 1002

GREETING = "Hello, alice! Are you hungry?"
MAIN_MENU = "Again main menu! Are you hungry?"
EMPTY_CART = "What are you gonna order? Cart: Empty"


class RecordingFoodAPI:
    """Remembers orders; fails on demand the way a real implementation must."""

    def __init__(self) -> None:
        self.orders: list[tuple[int, list[str]]] = []
        self.keys: list[str] = []
        self.fail = False

    async def order_food(self, user_id: int, items: Sequence[str], *, idempotency_key: str) -> None:
        if self.fail:
            raise FoodOrderError("food API answered HTTP 500")
        self.orders.append((user_id, list(items)))
        self.keys.append(idempotency_key)

    async def close(self) -> None:
        """Nothing to release."""


def make_settings(state_key: str, state_ttl: float | None = None, **redis: Any) -> Settings:
    """Settings given explicitly, so neither the environment nor a `.env` can change them."""
    return Settings(
        telegram=TelegramSettings(bot_token=SecretStr(TOKEN), _env_file=None),
        redis=RedisSettings(_env_file=None, **redis),
        state=StateSettings(
            state_key=state_key, state_ttl=state_ttl, lock_wait_timeout=5, _env_file=None
        ),
        food_api=FoodApiSettings(url=None, _env_file=None),
        runtime=RuntimeSettings(_env_file=None),
    )


class Chat:
    """One bot 'process': Dispatcher, Nodes and Bot wired exactly as the running bot is."""

    _update_ids = itertools.count(1)

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self.session = FakeSession()
        self.bot = Bot(TOKEN, session=self.session)
        self.food_api = RecordingFoodAPI()
        ctx = Ctx(
            bot=self.bot,
            settings=settings,
            food_api=self.food_api,
            logger=logging.getLogger("test_bot"),
        )
        self.nodes = create_nodes(settings, redis, ctx)
        self.dispatcher: Dispatcher = build_dispatcher(self.nodes)

    async def say(self, text: str | None, user_id: int = ALICE, **fields: Any) -> list[str]:
        """Feed one message through the dispatcher; return what the bot sent to that chat."""
        update = message_update(next(self._update_ids), user_id, text, **fields)
        chat_id = update["message"]["chat"]["id"]
        before = len(self.session.telegram.sent_texts(chat_id))
        await self.dispatcher.feed_update(self.bot, Update.model_validate(update))
        return self.session.telegram.sent_texts(chat_id)[before:]

    async def node(self, user_id: int = ALICE) -> Any:
        return await self.nodes.user(user_id).get_node()


@pytest.fixture
def settings(state_key: str) -> Settings:
    return make_settings(state_key)


@pytest.fixture
async def chat(redis_client: Redis, settings: Settings) -> Chat:
    return Chat(redis_client, settings)


async def to_hungry(chat: Chat, *items: str) -> None:
    await chat.say("hi")
    await chat.say("Yes")
    for item in items:
        await chat.say(item)


async def test_first_message_greets_by_username_and_is_not_handled_as_an_answer(
    chat: Chat,
) -> None:
    assert await chat.say("Yes") == [GREETING]
    assert isinstance(await chat.node(), Start)


async def test_greeting_falls_back_to_the_full_name_without_a_username(chat: Chat) -> None:
    replies = await chat.say("hi", username=None, first_name="Bob", last_name="Smith")
    assert replies == ["Hello, Bob Smith! Are you hungry?"]


async def test_start_yes_goes_to_hungry_with_an_empty_cart(chat: Chat) -> None:
    await chat.say("hi")
    assert await chat.say("Yes") == ["No worries, I've got you back!", EMPTY_CART]
    node = await chat.node()
    assert isinstance(node, Hungry)
    assert node._data.order == []


async def test_start_no_goes_to_hold_silently(chat: Chat) -> None:
    await chat.say("hi")
    assert await chat.say("No") == ["Write me when you are ready then!"]
    assert isinstance(await chat.node(), Hold)


async def test_start_anything_else_asks_again(chat: Chat) -> None:
    await chat.say("hi")
    assert await chat.say("Maybe") == ["Say what?", MAIN_MENU]
    assert isinstance(await chat.node(), Start)


async def test_hungry_adds_items_to_the_stored_cart(chat: Chat) -> None:
    await to_hungry(chat)
    assert await chat.say("Pizza") == ["Added Pizza", "What are you gonna order? Cart: Pizza"]
    assert await chat.say("Cola") == [
        "Added Cola",
        "What are you gonna order? Cart: Pizza, Cola",
    ]
    node = await chat.node()
    assert isinstance(node, Hungry)
    assert node._data.order == ["Pizza", "Cola"]


async def test_finish_orders_through_the_food_api_and_returns_to_the_menu(chat: Chat) -> None:
    await to_hungry(chat, "Pizza", "Cola")
    assert await chat.say("Finish") == ["Ordering Pizza, Cola", "Ordered!", MAIN_MENU]
    assert chat.food_api.orders == [(ALICE, ["Pizza", "Cola"])]
    assert isinstance(await chat.node(), Start)


async def test_finish_with_an_empty_cart_stays_hungry(chat: Chat) -> None:
    await to_hungry(chat)
    assert await chat.say("Finish") == [
        "Cart is empty! Write Cancel to cancel the order",
        EMPTY_CART,
    ]
    assert chat.food_api.orders == []
    assert isinstance(await chat.node(), Hungry)


async def test_failed_order_says_error_logs_the_user_and_returns_to_the_menu(
    chat: Chat, caplog: pytest.LogCaptureFixture
) -> None:
    await to_hungry(chat, "Pizza")
    chat.food_api.fail = True
    with caplog.at_level(logging.ERROR, logger="test_bot"):
        assert await chat.say("Finish") == ["Ordering Pizza", "Error", MAIN_MENU]
    assert any(
        str(ALICE) in record.getMessage() and "HTTP 500" in record.getMessage()
        for record in caplog.records
    )
    assert isinstance(await chat.node(), Start)


async def test_cancel_drops_the_cart(chat: Chat) -> None:
    await to_hungry(chat, "Pizza")
    assert await chat.say("Cancel") == ["Order cancelled!", MAIN_MENU]
    assert chat.food_api.orders == []
    assert isinstance(await chat.node(), Start)


async def test_hold_returns_to_the_menu_on_any_message(chat: Chat) -> None:
    await chat.say("hi")
    await chat.say("No")
    assert await chat.say("anything") == [MAIN_MENU]
    assert isinstance(await chat.node(), Start)


async def test_start_command_greets_and_resets_from_any_node(chat: Chat) -> None:
    await to_hungry(chat, "Pizza")
    assert await chat.say("/start") == [GREETING]
    assert isinstance(await chat.node(), Start)
    # The menu works as usual afterwards, and the old cart is gone.
    assert await chat.say("Yes") == ["No worries, I've got you back!", EMPTY_CART]


async def test_start_command_works_for_a_new_user(chat: Chat) -> None:
    assert await chat.say("/start") == [GREETING]
    assert isinstance(await chat.node(), Start)


async def test_non_text_message_gets_a_hint_and_keeps_the_state(chat: Chat) -> None:
    await to_hungry(chat, "Pizza")
    assert await chat.say(None) == [NOT_TEXT_TEXT]
    node = await chat.node()
    assert isinstance(node, Hungry)
    assert node._data.order == ["Pizza"]


async def test_group_messages_are_ignored(chat: Chat) -> None:
    assert await chat.say("hi", chat_type="group") == []
    assert await chat.say("/start", chat_type="group") == []
    assert await chat.node() is None


async def test_users_have_separate_states(chat: Chat) -> None:
    await to_hungry(chat, "Pizza")
    assert await chat.say("hi", user_id=BOB, username="bob") == ["Hello, bob! Are you hungry?"]
    assert await chat.say("Soup") == ["Added Soup", "What are you gonna order? Cart: Pizza, Soup"]
    assert isinstance(await chat.node(BOB), Start)


async def test_state_survives_a_restart(redis_client: Redis, settings: Settings) -> None:
    first = Chat(redis_client, settings)
    await to_hungry(first, "Pizza")
    restarted = Chat(redis_client, settings)
    assert await restarted.say("Cola") == [
        "Added Cola",
        "What are you gonna order? Cart: Pizza, Cola",
    ]


async def test_a_burst_of_items_keeps_every_item(chat: Chat) -> None:
    await to_hungry(chat)
    items = [f"item{i}" for i in range(30)]
    await asyncio.gather(*(chat.say(item) for item in items))
    node = await chat.node()
    assert isinstance(node, Hungry)
    assert sorted(node._data.order) == sorted(items)


async def test_unreachable_redis_gets_a_please_try_again_answer(state_key: str) -> None:
    settings = make_settings(state_key, url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"))
    redis = create_redis(settings.redis)
    try:
        chat = Chat(redis, settings)
        assert await chat.say("hi") == [STATE_UNAVAILABLE_TEXT]
        assert await chat.say("/start") == [STATE_UNAVAILABLE_TEXT]
    finally:
        await redis.aclose()


async def test_state_ttl_slides_with_every_event_and_then_expires(
    redis_client: Redis, state_key: str
) -> None:
    chat = Chat(redis_client, make_settings(state_key, state_ttl=1.0))
    await to_hungry(chat, "Pizza")
    for item in ("Cola", "Soup", "Tea"):  # 1.8 s in all, longer than the TTL
        await asyncio.sleep(0.6)
        assert (await chat.say(item))[0] == f"Added {item}"
    node = await chat.node()
    assert isinstance(node, Hungry)
    assert node._data.order == ["Pizza", "Cola", "Soup", "Tea"]
    await asyncio.sleep(1.5)
    assert await chat.say("Fries") == [GREETING]
