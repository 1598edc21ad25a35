"""Every kind of update the bot answers, delivered again: answered once, state changed once.

Telegram sends an update again when it saw no answer; the copy may reach the same process or
another replica (docs/guarantees.md, "A re-delivered update runs once"). Each kind below is
delivered to two `BotTestClient`s sharing one Redis and one Bot API stand-in (two replicas)
at the same moment, then to each again. A second user, Bob, gets the same update once: Alice
must end up with exactly Bob's replies, node, language and orders, and her keys in Redis must
not change after the first delivery was handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from botnodes.telegram.invoices import PaymentSettings
from botnodes.testing import BotTestClient, FakeTelegram, TestUser, message_update

from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.settings import Settings

from .paying import PaidFoodAPI

ALICE = 7001
BOB = 7002


@dataclasses.dataclass
class Replicas:
    one: BotTestClient
    two: BotTestClient
    telegram: FakeTelegram
    food_api: PaidFoodAPI


#: Brings a user to where the update makes sense (through replica `one`); returns the update.
Prepare = Callable[[Replicas, TestUser], Awaitable[dict[str, Any]]]


async def typed_dish(bot: Replicas, user: TestUser) -> dict[str, Any]:
    await user.send("hi")
    await user.click("Yes")
    return message_update(bot.one.next_update_id(), user.user_id, "Pizza")


async def button_press(bot: Replicas, user: TestUser) -> dict[str, Any]:
    await user.send("hi")
    return bot.telegram.press_update(bot.one.next_update_id(), user.user_id, "Yes")


async def start_command(bot: Replicas, user: TestUser) -> dict[str, Any]:
    await user.send("hi")
    await user.click("Yes")
    await user.send("Pizza")
    return message_update(bot.one.next_update_id(), user.user_id, "/start")


async def language_command(bot: Replicas, user: TestUser) -> dict[str, Any]:
    await user.send("hi")
    return message_update(bot.one.next_update_id(), user.user_id, "/language")


async def language_press(bot: Replicas, user: TestUser) -> dict[str, Any]:
    await user.send("hi")
    await user.send("/language")
    return bot.telegram.press_update(bot.one.next_update_id(), user.user_id, "Русский")


async def photo(bot: Replicas, user: TestUser) -> dict[str, Any]:
    await user.send("hi")
    update = message_update(bot.one.next_update_id(), user.user_id, None)
    del update["message"]["location"]
    size = {"file_id": "AgAD-photo", "file_unique_id": "AQAD", "width": 90, "height": 90}
    update["message"]["photo"] = [size]
    return update


async def finish(bot: Replicas, user: TestUser) -> dict[str, Any]:
    await typed_dish(bot, user)
    await user.send("Pizza")
    return bot.telegram.press_update(bot.one.next_update_id(), user.user_id, "Finish")


async def pre_checkout(bot: Replicas, user: TestUser) -> dict[str, Any]:
    query, _ = await invoiced(bot, user)
    return query


async def successful_payment(bot: Replicas, user: TestUser) -> dict[str, Any]:
    query, paid = await invoiced(bot, user)
    await bot.one.feed(query)
    assert bot.telegram.pre_checkout_answers[query["pre_checkout_query"]["id"]][0]["ok"]
    return paid


async def invoiced(bot: Replicas, user: TestUser) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user's cart is invoiced; the updates of paying it (pre-checkout, payment)."""
    await typed_dish(bot, user)
    await user.send("Pizza")
    await user.click("Finish")
    _, invoice = bot.telegram.last_invoice(user.user_id)
    ids = (bot.one.next_update_id(), bot.one.next_update_id())
    return bot.telegram.pay_updates(ids, user.user_id, invoice)


def command(text: str) -> Prepare:
    async def prepare(bot: Replicas, user: TestUser) -> dict[str, Any]:
        await user.send("hi")
        return message_update(bot.one.next_update_id(), user.user_id, text)

    return prepare


#: How to bring a user to the update, and whether it needs PAYMENTS=stars.
KINDS = [
    pytest.param(typed_dish, False, id="text message"),
    pytest.param(button_press, False, id="button press"),
    pytest.param(start_command, False, id="/start"),
    pytest.param(language_command, False, id="/language"),
    pytest.param(language_press, False, id="language button"),
    pytest.param(photo, False, id="photo (the hint)"),
    pytest.param(finish, False, id="Finish (the order)"),
    pytest.param(pre_checkout, True, id="pre_checkout_query"),
    pytest.param(successful_payment, True, id="successful_payment"),
    pytest.param(command("/paysupport"), True, id="/paysupport"),
    pytest.param(command("/terms"), True, id="/terms"),
]


@contextlib.asynccontextmanager
async def replicas(
    settings: Settings, redis_client: Redis, *, payments: bool
) -> AsyncIterator[Replicas]:
    if payments:
        settings = dataclasses.replace(
            settings, payments=PaymentSettings(payments="stars", _env_file=None)
        )
    telegram = FakeTelegram()
    food_api = PaidFoodAPI()
    async with (
        BotTestClient.start(
            BOT, settings, redis=redis_client, food_api=food_api, telegram=telegram
        ) as one,
        BotTestClient.start(
            BOT, settings, redis=redis_client, food_api=food_api, telegram=telegram
        ) as two,
    ):
        yield Replicas(one, two, telegram, food_api)


async def user_keys(redis: Redis, state_key: str, user_id: int) -> dict[bytes, bytes | None]:
    """Every key of the user's (state, handled events, language, invoices...) and its value."""
    tag = "{" + str(user_id) + "}"  # the user's hash tag
    keys = [key async for key in redis.scan_iter(f"*{state_key}*{tag}*")]
    return {key: await redis.dump(key) for key in sorted(keys) if not key.endswith(b":lock")}


def answers(bot: Replicas, update: dict[str, Any]) -> int:
    """How often Telegram accepted an answer to the update's press or pre-checkout query."""
    if "callback_query" in update:
        return len(bot.telegram.answers[update["callback_query"]["id"]])
    if "pre_checkout_query" in update:
        return len(bot.telegram.pre_checkout_answers[update["pre_checkout_query"]["id"]])
    return 0


async def outcome(
    bot: Replicas, user: TestUser, update: dict[str, Any], since: int
) -> dict[str, Any]:
    """What one update did for `user`: replies, node, language, orders, charges refunded."""
    node = await user.node()
    return {
        "answers": answers(bot, update),
        "replies": [(r.text, r.buttons) for r in user.replies()[since:]],
        "node": None if node is None else (type(node).__name__, node._data),
        "language": await bot.one.ctx.languages.of(user.user_id),
        "orders": [o["items"] for o in bot.food_api.orders if o["user_id"] == user.user_id],
        "refunds": len(bot.telegram.refunds),
    }


@pytest.mark.parametrize(("prepare", "payments"), KINDS)
async def test_every_kind_of_update_delivered_again_anywhere_is_answered_once(
    settings: Settings,
    redis_client: Redis,
    state_key: str,
    prepare: Prepare,
    payments: bool,
) -> None:
    async with replicas(settings, redis_client, payments=payments) as bot:
        bob, alice = bot.one.user(BOB), bot.one.user(ALICE)
        once = await prepare(bot, bob)
        since = len(bob.replies())
        await bot.one.feed(once)
        expected = await outcome(bot, bob, once, since)
        assert expected["replies"] or expected["answers"], "the update is answered"

        update = await prepare(bot, alice)
        since = len(alice.replies())
        # Delivered to both replicas at once, then again to each.
        await asyncio.gather(bot.one.feed(update), bot.two.feed(update))
        stored = await user_keys(redis_client, state_key, ALICE)
        await bot.one.feed(update)
        await bot.two.feed(update)
        assert await outcome(bot, alice, update, since) == expected
        assert await user_keys(redis_client, state_key, ALICE) == stored
