"""The bot against a Telegram that says no: 429, 5xx, dropped connections, 4,096 characters.

Through the test client, so the real dispatcher, nodes, botnodes and Redis are involved and
the fake Bot API enforces Telegram's rules on every call.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import AnswerCallbackQuery, SendMessage

from botnodes.telegram.buttons import keyboard
from botnodes.telegram.telegram_limits import MAX_MESSAGE_LENGTH, split_text
from botnodes.testing import BotTestClient, TestUser

from {{ cookiecutter.project_slug }}.nodes import Start

from ..conftest import TOKEN, RecordingFoodAPI

ALICE = 1001
MAIN_MENU = "Again main menu! Are you hungry?"
FINISH_REPLIES = ["Ordering Pizza", "Ordered!", MAIN_MENU]


@pytest.fixture
def alice(client: BotTestClient) -> TestUser:
    return client.user(ALICE)


async def in_cart(user: TestUser, *items: str) -> None:
    await user.send("hi")
    await user.send("Yes")
    for item in items:
        await user.send(item)


def texts_after(user: TestUser, count: int) -> list[str]:
    return [reply.text for reply in user.replies()[count:]]


def refuse_once(client: BotTestClient, user: TestUser, text: str) -> None:
    """Flood control says 429 (retry after 1 s) to the user's next reply with `text`."""
    client.telegram.fail(
        "sendMessage",
        status=429,
        retry_after=1,
        match=lambda p: p["chat_id"] == user.user_id and p["text"] == text,
    )


async def test_a_429_on_any_reply_of_finish_is_waited_out_and_orders_once(
    client: BotTestClient, food_api: RecordingFoodAPI, caplog: pytest.LogCaptureFixture
) -> None:
    # One user per reply of Finish, each refused once on that reply: a 429 costs a whole
    # second (Telegram's retry_after), so the three wait it out at the same time.
    users = {reply: client.user(ALICE + n) for n, reply in enumerate(FINISH_REPLIES)}
    for user in users.values():
        await in_cart(user, "Pizza")
    for reply, user in users.items():
        refuse_once(client, user, reply)
    before = {reply: len(user.replies()) for reply, user in users.items()}
    with caplog.at_level(logging.WARNING):
        await asyncio.gather(*(user.send("Finish") for user in users.values()))
    for reply, user in users.items():
        assert texts_after(user, before[reply]) == FINISH_REPLIES, f"429 on {reply!r}"
        assert isinstance(await user.node(), Start), f"429 on {reply!r}"
    assert sorted(food_api.orders) == [(user.user_id, ["Pizza"]) for user in users.values()]
    waits = [r.getMessage() for r in caplog.records if "retry 1 in" in r.getMessage()]
    assert waits == ["Telegram 429 on sendMessage: retry 1 in 1.0s"] * len(FINISH_REPLIES)
    assert TOKEN.split(":")[1] not in caplog.text


async def test_server_errors_and_dropped_connections_are_retried(
    client: BotTestClient, alice: TestUser
) -> None:
    await in_cart(alice, "Pizza")
    client.telegram.fail("sendMessage", status=502)
    client.telegram.fail("sendMessage", drop=True)
    before = len(alice.replies())
    await alice.send("Finish")
    assert texts_after(alice, before) == FINISH_REPLIES
    assert len([c for c in client.telegram.attempts("sendMessage") if not c.ok]) == 2


async def test_a_reply_failing_past_the_budget_still_leaves_the_user_on_the_menu(
    client: BotTestClient, alice: TestUser, food_api: RecordingFoodAPI
) -> None:
    await in_cart(alice, "Pizza")
    # Flood control asks for more than TELEGRAM_MAX_RETRY_WAIT (30 s): no wait, the reply fails.
    client.telegram.fail(
        "sendMessage", status=429, retry_after=600, match=lambda p: p["text"] == "Ordered!"
    )
    before = len(alice.replies())
    await alice.send("Finish")
    assert texts_after(alice, before) == ["Ordering Pizza", MAIN_MENU]
    assert isinstance(await alice.node(), Start)
    # The next Finish reaches the menu, not the cart: nothing can order twice.
    assert [r.text for r in await alice.send("Finish")] == ["Say what?", MAIN_MENU]
    assert food_api.orders == [(ALICE, ["Pizza"])]


async def test_a_message_over_4096_characters_goes_out_in_parts_split_at_spaces(
    client: BotTestClient, alice: TestUser
) -> None:
    text = "soup " + "very " * 1200 + "tasty"
    assert len(text) > MAX_MESSAGE_LENGTH
    await client.bot.send_message(ALICE, text, reply_markup=keyboard(1, "Finish"))
    shown = [r.text for r in alice.replies()]
    assert len(shown) == 2
    assert " ".join(shown) == text  # split at a space: nothing lost
    assert all(len(part) <= MAX_MESSAGE_LENGTH for part in shown)
    assert alice.replies()[-1].buttons == [["Finish"]]  # buttons under the last part
    assert alice.replies()[0].buttons == []
    assert not any(not c.ok for c in client.telegram.calls)


async def test_the_fake_refuses_what_telegram_refuses(client: BotTestClient) -> None:
    # Without the bot's limits the same text is refused, as Telegram does.
    too_long = SendMessage(chat_id=ALICE, text="x" * 4097)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await client.bot.session.make_request(client.bot, too_long)


async def test_a_long_callback_answer_is_shortened_to_200_characters(
    client: BotTestClient, alice: TestUser
) -> None:
    await alice.send("hi")
    update = client.telegram.press_update(client.next_update_id(), ALICE, "Yes")
    query_id = update["callback_query"]["id"]
    await client.bot(AnswerCallbackQuery(callback_query_id=query_id, text="y" * 500))
    [answer] = client.telegram.answers[query_id]
    assert len(answer["text"]) == 200


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("short", ["short"]),
        ("a" * 4096, ["a" * 4096]),
        ("a" * 4000 + "\n" + "b" * 200, ["a" * 4000, "b" * 200]),
        ("a" * 4000 + " " + "b" * 200, ["a" * 4000, "b" * 200]),
        ("x " * 2100, ["x " * 2047 + "x", "x " * 52]),
        ("c" * 5000, ["c" * 4096, "c" * 904]),
    ],
    ids=["short", "exact", "at-a-line", "at-a-space", "words", "one-long-word"],
)
def test_split_text(text: str, parts: list[str]) -> None:
    assert split_text(text) == parts
    assert all(len(part) <= MAX_MESSAGE_LENGTH for part in split_text(text))
