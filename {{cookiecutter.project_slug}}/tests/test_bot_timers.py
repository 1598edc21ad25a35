"""A cart left alone: recalled once, then dropped; time is moved by the test client.

`client.advance(...)` moves the bot's clock and fires every timer that falls due, the way the
running bot's poller would, without sleeping.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from botnodes.telegram.metrics import BotMetrics
from botnodes.telegram.settings import ConfigError, load_settings
from botnodes.testing import BotTestClient, Reply, TestUser

from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.nodes import Hungry, Start
from {{ cookiecutter.project_slug }}.settings import CartSettings, Settings

from .conftest import RecordingFoodAPI
from .english import STALE_PRESS_TEXT

ALICE = 1001
MAIN_MENU = "Again main menu! Are you hungry?"
EXPIRED = "Your cart expired."


def reminder(items: str) -> Reply:
    return Reply(f"Still hungry? Your cart: {items}", [["Finish", "Cancel"]])


@pytest.fixture
def alice(client: BotTestClient) -> TestUser:
    return client.user(ALICE, username="alice")


async def to_hungry(user: TestUser, *items: str) -> None:
    await user.send("hi")
    await user.send("Yes")
    for item in items:
        await user.send(item)


async def after(client: BotTestClient, user: TestUser, **duration: float) -> list[Reply]:
    """What `user` was sent while `duration` passed."""
    before = len(user.replies())
    await client.advance(timedelta(**duration))
    return user.replies()[before:]


async def test_a_cart_left_alone_is_recalled_once_and_its_buttons_work(
    client: BotTestClient, alice: TestUser, food_api: RecordingFoodAPI
) -> None:
    await to_hungry(alice, "Pizza", "Cola")
    assert await after(client, alice, minutes=29, seconds=59) == []
    assert await after(client, alice, seconds=2) == [reminder("Pizza, Cola")]
    assert await after(client, alice, hours=1) == []  # once per cart
    replies = await alice.click("Finish")
    assert [reply.text for reply in replies] == ["Ordering Pizza, Cola", "Ordered!", MAIN_MENU]
    assert food_api.orders == [(ALICE, ["Pizza", "Cola"])]


async def test_adding_after_the_reminder_does_not_recall_the_same_cart_again(
    client: BotTestClient, alice: TestUser
) -> None:
    await to_hungry(alice, "Pizza")
    await client.advance(minutes=31)
    await alice.send("Soup")
    assert await after(client, alice, hours=2) == []
    node = await alice.node()
    assert isinstance(node, Hungry)
    assert node._data.order == ["Pizza", "Soup"]


async def test_an_empty_cart_is_not_recalled(client: BotTestClient, alice: TestUser) -> None:
    await to_hungry(alice)
    assert await after(client, alice, hours=1) == []


async def test_a_cart_left_for_a_day_expires_back_to_the_main_menu(
    client: BotTestClient, alice: TestUser
) -> None:
    await to_hungry(alice, "Pizza")
    replies = await after(client, alice, hours=24)
    assert [reply.text for reply in replies] == [
        "Still hungry? Your cart: Pizza",
        EXPIRED,
        MAIN_MENU,
    ]
    assert replies[-1].buttons == [["Yes", "No"]]
    assert isinstance(await alice.node(), Start)
    # The reminder's buttons belong to a visit that is over.
    assert await alice.click("Cancel") == []
    assert alice.last_answer == STALE_PRESS_TEXT
    await alice.click("Yes")
    assert (await alice.send("Soup"))[0].text == "Added Soup"  # the old cart is gone


async def test_a_message_just_before_the_deadline_restarts_both_timers(
    client: BotTestClient, alice: TestUser
) -> None:
    await to_hungry(alice, "Pizza")
    await client.advance(minutes=29, seconds=59)
    await alice.send("Soup")
    assert await after(client, alice, minutes=29, seconds=58) == []
    assert await after(client, alice, seconds=2) == [reminder("Pizza, Soup")]
    # 24 hours after "Soup", not after "Pizza" or the reminder:
    assert await after(client, alice, hours=23, minutes=29, seconds=59) == []
    assert [r.text for r in await after(client, alice, seconds=2)] == [EXPIRED, MAIN_MENU]


async def test_a_timer_of_a_left_cart_never_fires(client: BotTestClient, alice: TestUser) -> None:
    await to_hungry(alice, "Pizza")
    await alice.send("Cancel")
    await alice.send("Yes")  # a new cart, a new visit of Hungry: its own timers
    await client.advance(minutes=20)
    await alice.send("Tea")
    assert await after(client, alice, minutes=29) == []
    assert await after(client, alice, minutes=2) == [reminder("Tea")]


@pytest.fixture
async def quiet_client(
    settings: Settings, redis_client: Redis, food_api: RecordingFoodAPI
) -> AsyncIterator[BotTestClient]:
    """The bot with both cart timers turned off (0)."""
    cart = CartSettings(
        _env_file=None, cart_reminder_after=timedelta(0), cart_expires_after=timedelta(0)
    )
    quiet = dataclasses.replace(settings, cart=cart)
    async with BotTestClient.start(BOT, quiet, redis=redis_client, food_api=food_api) as client:
        yield client


async def test_zero_turns_the_timers_off(quiet_client: BotTestClient) -> None:
    alice = quiet_client.user(ALICE)
    await to_hungry(alice, "Pizza")
    assert await after(quiet_client, alice, days=30) == []
    assert isinstance(await alice.node(), Hungry)


async def test_a_reminder_to_a_user_who_blocked_the_bot_is_dropped_not_retried(
    client: BotTestClient, alice: TestUser, caplog: pytest.LogCaptureFixture
) -> None:
    await to_hungry(alice, "Pizza")
    client.telegram.fail("sendMessage", status=403, times=5)
    with caplog.at_level(logging.WARNING):
        assert await after(client, alice, minutes=31) == []
    attempts = client.telegram.attempts("sendMessage")
    assert [call.ok for call in attempts].count(False) == 1  # 403 is final: no retry
    assert caplog.text.count("bot was blocked by the user") == 1
    node = await alice.node()
    assert isinstance(node, Hungry)
    assert node._data.reminded
    assert await after(client, alice, minutes=60) == []


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1800", 1800), ("1.5", 1.5), ("30m", 1800), ("24h", 86_400), ("PT1H", 3600), ("0", 0)],
)
def test_durations_take_seconds_units_and_iso_8601(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, seconds: float
) -> None:
    monkeypatch.setenv("CART_REMINDER_AFTER", value)
    settings = load_settings(Settings, None, need_token=False)
    assert settings.cart.cart_reminder_after == timedelta(seconds=seconds)
    assert settings.cart.cart_expires_after == timedelta(hours=24)


@pytest.mark.parametrize("value", ["soon", "-5", "30 minutes", "nan"])
def test_an_invalid_duration_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CART_EXPIRES_AFTER", value)
    with pytest.raises(ConfigError) as refused:
        load_settings(Settings, None, need_token=False)
    message = str(refused.value)
    assert message.startswith("CART_EXPIRES_AFTER: ")
    assert "\n" not in message


def test_timer_metrics_count_and_measure_lateness() -> None:
    metrics = BotMetrics()
    metrics.timer_scheduled("hungry", "reminder")
    metrics.timer_cancelled("hungry", "reminder")
    metrics.timer_fired("hungry", "expiry", 0.25)
    text = metrics.exposition().decode()
    for event, timer in (("scheduled", "reminder"), ("cancelled", "reminder"), ("fired", "expiry")):
        labels = f'event="{event}",node="hungry",timer="{timer}"'
        assert "bot_timers_total{" + labels + "} 1.0" in text
    assert 'bot_timer_lateness_seconds_bucket{le="0.3"} 1.0' in text
    assert 'bot_timer_lateness_seconds_bucket{le="0.2"} 0.0' in text
