# ruff: noqa: RUF001  - the Russian texts are meant to be Cyrillic
"""Payments at their edges (docs/payments.md): settings, Telegram's invoice rules, the quote
over HTTP, PAYMENTS=off, /paysupport and /terms, `chat`'s `:pay`, the update types asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr
from redis.asyncio import Redis

from botnodes.devtools.chat import Chat
from botnodes.telegram.app import secrets_of
from botnodes.telegram.payments import STARS, PaymentSettings, check_invoice
from botnodes.telegram.settings import ConfigError, load_settings
from botnodes.testing import BotTestClient, FakeTelegram
from botnodes.testing.fake_bot_api import Refusal

from {{ cookiecutter.project_slug }}.food_api import STAND_IN_PRICE, HttpFoodAPI
from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.nodes import Hungry
from {{ cookiecutter.project_slug }}.nodes.checkout import Checkout
from {{ cookiecutter.project_slug }}.settings import Settings

from ..conftest import free_port
from ..ops.bot_process import SETTING_NAMES
from .paying import (
    ALICE,
    MAIN_MENU,
    ORDERED,
    PROVIDER_TOKEN,
    PaidFoodAPI,
    checkout,
    texts,
    with_payments,
)

BOT_TOKEN = "123456:TEST-payments-edges"
QUOTE_REFUSED = "Sorry, we can't take this order. Your cart is kept: change it, or write Cancel."
QUOTE_FAILED = (
    "Sorry, I couldn't get the price just now. Your cart is kept: write Finish again in a moment."
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

# Settings: a mistake stops start-up with one line naming the setting; the token never shows --


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting of the developer's, and a BOT_TOKEN: the test sets the payment ones."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOT_TOKEN", BOT_TOKEN)
    return monkeypatch


def config_error() -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(Settings, None)
    return str(caught.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PAYMENTS": "bogus"}, "PAYMENTS: Input should be 'off', 'provider' or 'stars'"),
        (
            {"PAYMENTS": "provider"},
            "PAYMENT_PROVIDER_TOKEN: is required with PAYMENTS=provider "
            "(@BotFather > your bot > Payments)",
        ),
        (
            {"PAYMENT_CURRENCY": "usd"},
            "PAYMENT_CURRENCY: must be a three-letter ISO 4217 code in capitals, like USD",
        ),
        (
            {"PAYMENTS": "provider", "PAYMENT_CURRENCY": "US$"},
            "PAYMENT_CURRENCY: must be a three-letter ISO 4217 code in capitals, like USD",
        ),
        (
            {"PAYMENTS": "provider", "PAYMENT_CURRENCY": "XTR"},
            "PAYMENT_CURRENCY: XTR is Telegram Stars: use PAYMENTS=stars",
        ),
        (
            {"PAYMENTS": "provider", "PAYMENT_CURRENCY": "eur"},
            "PAYMENT_CURRENCY: must be a three-letter ISO 4217 code in capitals, like USD",
        ),
    ],
)
def test_a_bad_payment_setting_stops_start_up_with_one_line_naming_it_never_the_token(
    environment: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    if env.get("PAYMENTS") == "provider" and "PAYMENT_CURRENCY" in env:
        environment.setenv("PAYMENT_PROVIDER_TOKEN", PROVIDER_TOKEN)
    for name, value in env.items():
        environment.setenv(name, value)
    message = config_error()
    assert message == expected
    assert PROVIDER_TOKEN not in message
    assert PROVIDER_TOKEN.split(":")[-1] not in message


def test_the_provider_token_is_a_secret_kept_out_of_reprs_and_masked_in_logs(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("PAYMENTS", "provider")
    environment.setenv("PAYMENT_PROVIDER_TOKEN", PROVIDER_TOKEN)
    settings = load_settings(Settings, None)
    assert settings.payments.payment_provider_token == SecretStr(PROVIDER_TOKEN)
    assert PROVIDER_TOKEN not in repr(settings)
    assert PROVIDER_TOKEN not in str(settings.payments)
    # The log formatter masks every value secrets_of names (test_bot_config.py shows how).
    assert PROVIDER_TOKEN in secrets_of(settings)


async def test_stars_invoices_in_xtr_without_the_token_whatever_currency_is_set(
    settings: Settings, redis_client: Redis, paid_api: PaidFoodAPI
) -> None:
    """PAYMENTS=stars ignores PAYMENT_CURRENCY and PAYMENT_PROVIDER_TOKEN (docs: no token)."""
    telegram = FakeTelegram()
    stars = with_payments(
        settings,
        "stars",
        payment_currency="EUR",
        payment_provider_token=SecretStr(PROVIDER_TOKEN),
    )
    async with BotTestClient.start(
        BOT, stars, redis=redis_client, food_api=paid_api, telegram=telegram
    ) as client:
        replies = await checkout(client.user(ALICE), "Pizza")
    assert texts(replies)[1] == "Invoice: Your food order (1250 XTR)"
    [(_, invoice)] = telegram.invoices.items()
    assert invoice["currency"] == STARS
    assert not invoice.get("provider_token")


# Telegram's invoice rules: the stand-in refuses what the library's own check refuses -----------

GOOD_INVOICE: dict[str, Any] = {
    "chat_id": ALICE,
    "title": "Your food order",
    "description": "Pizza, Sushi",
    "payload": f"{ALICE}.{'A' * 22}",
    "currency": "USD",
    "prices": [{"label": "Pizza", "amount": 1250}, {"label": "Sushi", "amount": 899}],
    "provider_token": PROVIDER_TOKEN,
}


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"title": ""}, "INVOICE_TITLE_INVALID"),
        ({"title": "t" * 33}, "INVOICE_TITLE_INVALID"),
        ({"description": ""}, "INVOICE_DESCRIPTION_INVALID"),
        ({"description": "d" * 256}, "INVOICE_DESCRIPTION_INVALID"),
        ({"payload": ""}, "INVOICE_PAYLOAD_INVALID"),
        ({"payload": "é" * 65}, "INVOICE_PAYLOAD_INVALID"),  # 65 characters, 130 bytes
        ({"prices": []}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"prices": [{"label": "Pizza", "amount": 0}]}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"prices": [{"label": "Pizza", "amount": -5}]}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"prices": [{"label": "Pizza", "amount": 12.5}]}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"prices": [{"label": "Pizza", "amount": True}]}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        (
            {"currency": STARS, "provider_token": ""},  # two prices in Stars
            "STARS_INVOICE_INVALID",
        ),
    ],
)
def test_an_invoice_telegram_refuses_is_refused_by_the_stand_in_and_the_librarys_check(
    changes: dict[str, Any], error: str
) -> None:
    invoice = {**GOOD_INVOICE, **changes}
    with pytest.raises(Refusal) as refused:
        FakeTelegram().answer("sendInvoice", invoice)
    assert (refused.value.status, refused.value.description) == (400, f"Bad Request: {error}")
    with pytest.raises(ValueError, match="invoice"):
        check_invoice(
            invoice["title"],
            invoice["description"],
            invoice["payload"],
            invoice["currency"],
            [price["amount"] for price in invoice["prices"]],
        )


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"title": "t" * 32, "description": "d" * 255, "payload": "p" * 128},
        {"payload": "é" * 64},  # 128 bytes
        {"currency": STARS, "provider_token": "", "prices": [{"label": "All", "amount": 1}]},
    ],
)
def test_an_invoice_at_telegrams_limits_passes_both(changes: dict[str, Any]) -> None:
    invoice = {**GOOD_INVOICE, **changes}
    check_invoice(
        invoice["title"],
        invoice["description"],
        invoice["payload"],
        invoice["currency"],
        [price["amount"] for price in invoice["prices"]],
    )
    telegram = FakeTelegram()
    telegram.answer("sendInvoice", invoice)
    assert [call.ok for call in telegram.attempts("sendInvoice")] == [True]


# The quote over HTTP (FOOD_API_QUOTE_URL): a real aiohttp server on 127.0.0.1 ----------------


class QuoteServer:
    """A food API on 127.0.0.1: /quote answers `answers` in turn (then prices at 1250 each),
    /orders records each order and its Idempotency-Key.
    """

    def __init__(self) -> None:
        #: (status, body) for the next quote requests, one each.
        self.answers: list[tuple[int, Any]] = []
        #: How many of the next quote requests get no answer in time.
        self.stalls = 0
        self.quotes: list[Any] = []
        self.orders: list[tuple[str, Any]] = []
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def _quote(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.quotes.append(body)
        if self.stalls:
            self.stalls -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), 5.0)
        if not self.answers:
            lines = [{"label": item, "amount": 1250} for item in body["items"]]
            return web.json_response({"lines": lines})
        status, reply = self.answers.pop(0)
        text = reply if isinstance(reply, str) else json.dumps(reply)
        return web.Response(status=status, text=text, content_type="application/json")

    async def _order(self, request: web.Request) -> web.Response:
        self.orders.append((request.headers.get("Idempotency-Key", ""), await request.json()))
        return web.json_response({})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/quote", self._quote)
        app.router.add_post("/orders", self._order)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.base = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def quote_server() -> AsyncIterator[QuoteServer]:
    server = QuoteServer()
    await server.start()
    yield server
    await server.close()


@contextlib.asynccontextmanager
async def quoting_bot(
    settings: Settings,
    redis_client: Redis,
    server: QuoteServer,
    *,
    timeout: float = 2.0,
    retry_for: float = 0.0,
    quote: bool = True,
) -> AsyncIterator[BotTestClient]:
    """The bot with PAYMENTS=stars whose food API is `server` over HTTP."""
    api = HttpFoodAPI(
        f"{server.base}/orders",
        timeout=timeout,
        retry_for=retry_for,
        quote_url=f"{server.base}/quote" if quote else None,
    )
    try:
        async with BotTestClient.start(
            BOT, with_payments(settings, "stars"), redis=redis_client, food_api=api
        ) as client:
            yield client
    finally:
        await api.close()


async def assert_cart_kept(client: BotTestClient, *items: str) -> None:
    node = await client.user(ALICE).node()
    assert isinstance(node, Hungry)
    assert node._data.order == list(items)
    assert client.telegram.attempts("sendInvoice") == []


async def test_a_quote_refused_with_a_4xx_tells_the_user_keeps_the_cart_and_is_not_retried(
    settings: Settings, redis_client: Redis, quote_server: QuoteServer
) -> None:
    quote_server.answers = [(409, {"error": "closed"})]
    async with quoting_bot(settings, redis_client, quote_server, retry_for=30) as client:
        replies = await checkout(client.user(ALICE), "Pizza")
        assert texts(replies) == [QUOTE_REFUSED]
        assert quote_server.quotes == [{"user_id": ALICE, "items": ["Pizza"]}]  # once: final
        await assert_cart_kept(client, "Pizza")


async def test_a_quote_answered_5xx_then_200_is_retried_and_the_paid_order_goes_over_http(
    settings: Settings, redis_client: Redis, quote_server: QuoteServer
) -> None:
    quote_server.answers = [(503, "busy"), (200, {"lines": [{"label": "Pizza", "amount": 7}]})]
    async with quoting_bot(settings, redis_client, quote_server, retry_for=30) as client:
        alice = client.user(ALICE)
        replies = await checkout(alice, "Pizza")
        assert texts(replies)[:2] == ["Ordering Pizza", "Invoice: Your food order (7 XTR)"]
        assert quote_server.quotes == [{"user_id": ALICE, "items": ["Pizza"]}] * 2
        payment = await alice.pay()
        assert texts(payment.replies) == [ORDERED, MAIN_MENU]
    [(key, order)] = quote_server.orders
    assert key == f"{ALICE}:paid:{payment.charge_id}"
    assert order == {
        "user_id": ALICE,
        "items": ["Pizza"],
        "payment": {
            "currency": "XTR",
            "total_amount": 7,
            "telegram_payment_charge_id": payment.charge_id,
            "provider_payment_charge_id": "",
        },
    }


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        {"lines": []},
        {"lines": [{"label": "Pizza", "amount": "12.50"}]},
        {"lines": [{"label": "Pizza", "amount": 0}]},
        {"price": 1250},
    ],
)
async def test_a_malformed_quote_is_reported_and_the_cart_kept(
    settings: Settings,
    redis_client: Redis,
    quote_server: QuoteServer,
    caplog: pytest.LogCaptureFixture,
    body: Any,
) -> None:
    quote_server.answers = [(200, body)]
    async with quoting_bot(settings, redis_client, quote_server) as client:
        with caplog.at_level(logging.ERROR):
            replies = await checkout(client.user(ALICE), "Pizza")
        assert texts(replies) == [QUOTE_FAILED]
        assert f"Quote for user {ALICE} failed: food API quote" in caplog.text
        await assert_cart_kept(client, "Pizza")
        # The cart is as it was: the next Finish, answered well, sends the invoice.
        assert texts(await client.user(ALICE).click("Finish"))[:2] == [
            "Ordering Pizza",
            "Invoice: Your food order (1250 XTR)",
        ]


async def test_a_quote_not_answered_in_time_is_reported_and_the_cart_kept(
    settings: Settings, redis_client: Redis, quote_server: QuoteServer
) -> None:
    quote_server.stalls = 1
    async with quoting_bot(settings, redis_client, quote_server, timeout=0.2) as client:
        replies = await checkout(client.user(ALICE), "Pizza", "Sushi")
        assert texts(replies) == [QUOTE_FAILED]
        await assert_cart_kept(client, "Pizza", "Sushi")


async def test_a_quote_not_answered_in_time_is_asked_again_within_retry_for(
    settings: Settings, redis_client: Redis, quote_server: QuoteServer
) -> None:
    quote_server.stalls = 1
    async with quoting_bot(
        settings, redis_client, quote_server, timeout=0.2, retry_for=30
    ) as client:
        replies = await checkout(client.user(ALICE), "Pizza")
        assert texts(replies)[:2] == ["Ordering Pizza", "Invoice: Your food order (1250 XTR)"]
    assert len(quote_server.quotes) == 2


async def test_without_a_quote_url_each_item_costs_100_and_nothing_is_asked(
    settings: Settings, redis_client: Redis, quote_server: QuoteServer
) -> None:
    async with quoting_bot(settings, redis_client, quote_server, quote=False) as client:
        replies = await checkout(client.user(ALICE), "Pizza", "Sushi")
        assert texts(replies)[1] == f"Invoice: Your food order ({2 * STAND_IN_PRICE} XTR)"
        assert STAND_IN_PRICE == 100
    assert quote_server.quotes == []


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
