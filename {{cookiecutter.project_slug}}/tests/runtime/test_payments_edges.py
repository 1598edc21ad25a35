# ruff: noqa: RUF001  - the Russian texts are meant to be Cyrillic
"""Payments at their edges (docs/payments.md): PAYMENTS=off, /paysupport and /terms, `chat`'s
`:pay`, the update types asked of Telegram.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from redis.asyncio import Redis

from botnodes.devtools.chat_commands import Chat
from botnodes.telegram.invoices import PaymentSettings
from botnodes.testing import BotTestClient, FakeTelegram

from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.nodes.checkout import Checkout
from {{ cookiecutter.project_slug }}.settings import Settings

from .paying import (
    ALICE,
    MAIN_MENU,
    ORDERED,
    PaidFoodAPI,
    checkout,
    texts,
)

SUPPORT = {
    "en": "Trouble with a payment? Write to us here with what happened, and we'll sort it out. "
    "Refunds go back to how you paid.",
    "ru": "Проблема с оплатой? Напишите нам здесь, что случилось, и мы разберёмся. "
    "Деньги возвращаются тем же способом, которым вы платили.",
}
TERMS = {
    "en": "You pay for the food in your cart when you order. If the restaurant can't take a "
    "paid order, you get your money back.",
    "ru": "Вы оплачиваете еду из корзины при заказе. Если ресторан не может принять "
    "оплаченный заказ, деньги возвращаются.",
}


# PAYMENTS=off: the bot of the botnodes README -------------------------------------------------


async def test_payments_off_orders_at_finish_and_leaves_paysupport_to_the_nodes(
    settings: Settings, redis_client: Redis, paid_api: PaidFoodAPI
) -> None:
    assert settings.payments == PaymentSettings(_env_file=None)
    assert not settings.payments.enabled
    telegram = FakeTelegram()
    async with BotTestClient.start(
        BOT, settings, redis=redis_client, food_api=paid_api, telegram=telegram
    ) as client:
        alice = client.user(ALICE)
        assert texts(await checkout(alice, "Pizza")) == ["Ordering Pizza", ORDERED, MAIN_MENU]
        assert telegram.attempts("sendInvoice") == []
        assert paid_api.quotes == []
        [order] = paid_api.orders
        assert order["payment"] is None
        assert ":paid:" not in order["key"]
        with pytest.raises(LookupError):
            await alice.pay()
        for command in ("/paysupport", "/terms"):  # no payment texts: the main menu's answer
            assert texts(await alice.send(command)) == ["Say what?", MAIN_MENU]


# /paysupport and /terms with payments on: in the user's language -----------------------------


@pytest.mark.parametrize("language", ["en", "ru"])
async def test_paysupport_and_terms_answer_in_the_users_language_and_leave_the_node(
    stars: BotTestClient, language: str
) -> None:
    alice = stars.user(ALICE, language_code=language)
    yes, finish = ("Yes", "Finish") if language == "en" else ("Да", "Заказать")
    await alice.send("hi")
    await alice.click(yes)
    await alice.send("Pizza")
    assert texts(await alice.click(finish))[1].startswith("Invoice: ")
    assert texts(await alice.send("/paysupport")) == [SUPPORT[language]]
    assert texts(await alice.send("/terms")) == [TERMS[language]]
    assert isinstance(await alice.node(), Checkout)  # the invoice can still be paid
    assert (await alice.pay()).ok


# `chat`: an invoice shows, and `:pay` pays it -------------------------------------------------


@pytest.fixture
def stars_chat(stars: BotTestClient, tmp_path: Path) -> Chat:
    return Chat(stars, io.StringIO(), "alice", tmp_path / "chat.log")


async def type_lines(chat: Chat, *lines: str) -> list[str]:
    for line in lines:
        assert await chat.handle(line)
    assert isinstance(chat.out, io.StringIO)
    return chat.out.getvalue().splitlines()


async def test_chat_shows_the_invoice_and_pay_pays_it_once(
    stars_chat: Chat, paid_api: PaidFoodAPI
) -> None:
    assert (await type_lines(stars_chat, ":pay"))[-1] == (
        "(no invoice to pay: with PAYMENTS=provider or stars, Finish sends one)"
    )
    printed = await type_lines(stars_chat, "hi", "Yes", "Pizza", "Finish")
    assert "bot> Invoice: Your food order (1250 XTR)" in printed
    shown = len(printed)
    assert (await type_lines(stars_chat, ":pay"))[shown:] == [f"bot> {ORDERED}", *main_menu()]
    assert [order["items"] for order in paid_api.orders] == [["Pizza"]]
    # The invoice is paid: paying it again is refused by the bot, as Telegram would show.
    again = (await type_lines(stars_chat, ":pay"))[-1]
    assert again == "(Telegram shows: This invoice is already paid.)"
    assert len(paid_api.orders) == 1


def main_menu() -> list[str]:
    return [f"bot> {MAIN_MENU}", "     [1] Yes  [2] No"]


# The update types asked of Telegram: pre_checkout_query only with payments on -----------------


async def test_pre_checkout_queries_are_asked_for_only_with_payments_on(
    settings: Settings, redis_client: Redis, stars: BotTestClient
) -> None:
    """Polling's getUpdates and webhook's setWebhook both send resolve_used_update_types()."""
    paying = set(stars.dispatcher.resolve_used_update_types())
    assert {"message", "callback_query", "pre_checkout_query"} <= paying
    async with BotTestClient.start(BOT, settings, redis=redis_client) as off:
        assert "pre_checkout_query" not in off.dispatcher.resolve_used_update_types()
