"""Inline buttons through the real Dispatcher, botnodes and Redis, with the bot's test client.

Pressing a button does exactly what typing its word does; a press from an older node visit
changes nothing; every press is answered exactly once, whatever happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from botnodes.telegram.buttons import keyboard
from botnodes.testing import BotTestClient, Reply, TestUser, callback_update

from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.nodes import Hold, Hungry, Start
from {{ cookiecutter.project_slug }}.settings import Settings

from .conftest import RecordingFoodAPI, RedisServer, make_settings
from .english import STALE_PRESS_TEXT, STATE_UNAVAILABLE_TEXT

ALICE = 1001
GREETING = "Hello, alice! Are you hungry?"
MAIN_MENU = "Again main menu! Are you hungry?"
EMPTY_CART = "What are you gonna order? Cart: Empty"
YES_NO = [["Yes", "No"]]
FINISH_CANCEL = [["Finish", "Cancel"]]


@pytest.fixture
def alice(client: BotTestClient) -> TestUser:
    return client.user(ALICE, username="alice")


def texts(replies: list[Reply]) -> list[str]:
    return [reply.text for reply in replies]


async def test_menus_carry_their_buttons_and_texts_are_unchanged(alice: TestUser) -> None:
    assert await alice.send("hi") == [Reply(GREETING, YES_NO)]
    assert await alice.click("Yes") == [
        Reply("No worries, I've got you back!"),
        Reply(EMPTY_CART, FINISH_CANCEL),
    ]
    assert await alice.send("Pizza") == [
        Reply("Added Pizza"),
        Reply("What are you gonna order? Cart: Pizza", FINISH_CANCEL),
    ]
    assert await alice.click("Finish") == [
        Reply("Ordering Pizza"),
        Reply("Ordered!"),
        Reply(MAIN_MENU, YES_NO),
    ]
    assert alice.last_answer is None  # answered, without a toast


# Each button, pressed and typed: the same replies in the same order, the same node.
SCRIPTS = {
    "Yes": ([], "Yes", Hungry),
    "No": ([], "No", Hold),
    "Finish": (["Yes", "Tea"], "Finish", Start),
    "Finish-empty": (["Yes"], "Finish", Hungry),
    "Cancel": (["Yes", "Tea"], "Cancel", Start),
}


@pytest.mark.parametrize(("before", "word", "node"), SCRIPTS.values(), ids=SCRIPTS.keys())
async def test_pressing_a_button_does_what_typing_its_word_does(
    redis_client: Redis, settings: Settings, before: list[str], word: str, node: type
) -> None:
    outcomes = []
    for how in ("typed", "pressed"):  # each under its own key prefix, as a new user
        settings = make_settings(f"{settings.state.state_key}_{how}", url=settings.redis.url)
        async with BotTestClient.start(BOT, settings, redis=redis_client) as client:
            user = client.user(ALICE)
            await user.send("hi")
            for text in before:
                await user.send(text)
            replies = await user.send(word) if how == "typed" else await user.click(word)
            outcomes.append((replies, type(await user.node())))
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][1] is node


async def test_a_press_on_an_old_menu_is_out_of_date_and_changes_nothing(
    alice: TestUser, food_api: RecordingFoodAPI
) -> None:
    await alice.send("hi")
    await alice.click("Yes")
    # The greeting's "Yes" is still on screen, but the user has moved on.
    assert await alice.click("Yes") == []
    assert alice.last_answer == STALE_PRESS_TEXT
    assert isinstance(await alice.node(), Hungry)
    await alice.send("Pizza")
    await alice.click("Finish")
    assert await alice.click("Cancel") == []  # the cart that showed it is gone
    assert alice.last_answer == STALE_PRESS_TEXT
    assert food_api.orders == [(ALICE, ["Pizza"])]


async def test_pressing_finish_twice_orders_once(
    client: BotTestClient, alice: TestUser, food_api: RecordingFoodAPI
) -> None:
    await alice.send("hi")
    await alice.click("Yes")
    await alice.send("Pizza")
    first = client.telegram.press_update(client.next_update_id(), ALICE, "Finish")
    second = callback_update(
        client.next_update_id(),
        ALICE,
        first["callback_query"]["data"],
        first["callback_query"]["message"],
        "double",
    )
    client.telegram.answers["double"] = []
    await client.feed(first)
    await client.feed(second)
    assert food_api.orders == [(ALICE, ["Pizza"])]
    assert [len(client.telegram.answers[q]) for q in (first["callback_query"]["id"], "double")] == [
        1,
        1,
    ]
    assert client.telegram.answers["double"][0]["text"] == STALE_PRESS_TEXT


async def test_a_burst_of_20_presses_is_acted_on_once_and_each_answered_once(
    client: BotTestClient, alice: TestUser, food_api: RecordingFoodAPI
) -> None:
    await alice.send("hi")
    await alice.click("Yes")
    await alice.send("Pizza")
    presses = [
        client.telegram.press_update(client.next_update_id(), ALICE, "Finish") for _ in range(20)
    ]
    await asyncio.gather(*(client.feed(press) for press in presses))
    assert food_api.orders == [(ALICE, ["Pizza"])]
    answers = [client.telegram.answers[p["callback_query"]["id"]] for p in presses]
    assert all(len(answer) == 1 for answer in answers)
    assert sorted(str(a[0].get("text")) for a in answers) == ["None"] + [STALE_PRESS_TEXT] * 19
    assert texts(alice.replies()).count("Ordered!") == 1


async def test_a_press_and_messages_of_one_user_never_interleave(
    client: BotTestClient, alice: TestUser
) -> None:
    await alice.send("hi")
    await alice.click("Yes")
    await alice.send("Pizza")
    before = len(alice.replies())
    press = client.telegram.press_update(client.next_update_id(), ALICE, "Finish")
    await asyncio.gather(client.feed(press), alice.send("Cola"), alice.send("Soup"))
    # In arrival order: the press orders the cart as shown, then the texts reach the menu.
    assert texts(alice.replies()[before:]) == [
        "Ordering Pizza",
        "Ordered!",
        MAIN_MENU,
        "Say what?",
        MAIN_MENU,
        "Say what?",
        MAIN_MENU,
    ]


async def test_a_press_while_redis_is_down_is_answered_and_changes_nothing(
    start_redis: Callable[..., RedisServer], state_key: str
) -> None:
    server = start_redis("--appendonly", "yes", "--appendfsync", "always")
    settings = make_settings(state_key, url=SecretStr(server.url), retries=0, socket_timeout=0.5)
    async with BotTestClient.start(BOT, settings) as client:
        alice = client.user(ALICE)
        await alice.send("hi")
        server.stop()
        assert await alice.click("Yes") == []
        assert alice.last_answer == STATE_UNAVAILABLE_TEXT
        server.start()
        assert isinstance(await alice.node(), Start)
        assert texts(await alice.click("Yes")) == ["No worries, I've got you back!", EMPTY_CART]


async def test_a_press_of_a_button_that_is_not_ours_is_answered_and_ignored(
    client: BotTestClient, alice: TestUser
) -> None:
    await alice.send("hi")
    greeting = client.telegram.delivered(ALICE)[-1]
    client.telegram.answers["foreign"] = []
    await client.feed(
        callback_update(client.next_update_id(), ALICE, "not:ours", greeting, "foreign")
    )
    assert client.telegram.answers["foreign"] == [{"callback_query_id": "foreign"}]
    assert isinstance(await alice.node(), Start)
    assert texts(alice.replies()) == [GREETING]


async def test_a_bug_in_the_food_api_client_after_the_step_is_stored_is_told_not_repeated(
    client: BotTestClient, alice: TestUser, food_api: RecordingFoodAPI
) -> None:
    await alice.send("hi")
    await alice.click("Yes")
    await alice.send("Pizza")
    calls = 0

    async def broken(*args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("a bug in the food API client")

    food_api.order_food = broken  # type: ignore[method-assign]
    replies = await alice.click("Finish")
    # The step was stored before the order went out: the user hears the truth, and is on
    # the main menu, so pressing Finish again can't order the same cart twice.
    assert [r.text for r in replies] == [
        "Ordering Pizza",
        "Error",
        "Again main menu! Are you hungry?",
    ]
    assert calls == 1
    assert isinstance(await alice.node(), Start)
    assert [r.text for r in await alice.click("Finish")] == []
    assert alice.last_answer == STALE_PRESS_TEXT
    assert calls == 1


def test_callback_data_over_64_bytes_is_refused_when_the_keyboard_is_built() -> None:
    assert keyboard(10**9, "x" * 40).inline_keyboard[0][0].callback_data
    with pytest.raises(ValueError, match="64"):
        keyboard(1, "ü" * 40)


async def test_a_press_whose_node_raises_is_still_answered_once_and_changes_nothing(
    client: BotTestClient, alice: TestUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    await alice.send("hi")
    await alice.click("Yes")
    await alice.send("Pizza")

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the node")

    monkeypatch.setattr(Hungry, "on_event", broken)
    assert await alice.click("Finish") == []  # nothing held back is sent for a failed step
    assert alice.last_answer is None  # answered (once: click checks), without a toast
    node = await alice.node()
    assert isinstance(node, Hungry)
    assert node._data.order == ["Pizza"]
