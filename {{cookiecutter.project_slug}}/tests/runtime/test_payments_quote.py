"""The quote over HTTP (docs/payments.md, FOOD_API_QUOTE_URL): refused, failing, malformed, slow,
or not configured, the cart is kept and the user told.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from botnodes.testing import BotTestClient

from {{ cookiecutter.project_slug }}.food_api import STAND_IN_PRICE, HttpFoodAPI
from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.nodes import Hungry
from {{ cookiecutter.project_slug }}.settings import Settings

from ..conftest import free_port
from .paying import (
    ALICE,
    MAIN_MENU,
    ORDERED,
    checkout,
    texts,
    with_payments,
)

QUOTE_REFUSED = "Sorry, we can't take this order. Your cart is kept: change it, or write Cancel."
QUOTE_FAILED = (
    "Sorry, I couldn't get the price just now. Your cart is kept: write Finish again in a moment."
)


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
