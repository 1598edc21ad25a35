"""The HTTP food API client against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from pydantic import HttpUrl

from {{ cookiecutter.project_slug }}.food_api import (
    FoodOrderError,
    HttpFoodAPI,
    LoggingFoodAPI,
    create_food_api,
)
from {{ cookiecutter.project_slug }}.settings import FoodApiSettings

from .conftest import free_port

KEY = "1001:7"


class OrderServer:
    """A food API on 127.0.0.1: records each order, answers `status` after `delay` seconds."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.bodies: list[bytes] = []
        #: The Idempotency-Key of each request, and the orders placed: like a real service
        #: that honours the key, a repeated key is answered again but placed once.
        self.keys: list[str] = []
        self.orders: dict[str, bytes] = {}
        #: Requests answered so far (a request still in its delay is not).
        self.answered = 0
        self.content_types: list[str] = []
        self.status = status
        #: Statuses to answer first, one per request, before `status` (a flaky service).
        self.first_statuses: list[int] = []
        self.delay = delay
        #: Set when a request arrived (before the delay), to act while it is in flight.
        self.received = asyncio.Event()
        #: Set by close(): requests still in their delay are answered at once, so the
        #: server's shutdown does not wait out a delay the client stopped waiting for.
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _order(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        self.content_types.append(request.content_type)
        key = request.headers.get("Idempotency-Key", "")
        self.keys.append(key)
        self.orders.setdefault(key, body)
        self.received.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self.delay)
        self.answered += 1
        status = self.first_statuses.pop(0) if self.first_statuses else self.status
        return web.Response(status=status, text="{}")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/orders", self._order)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/orders"

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[OrderServer]:
    server = OrderServer()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def api(server: OrderServer) -> AsyncIterator[HttpFoodAPI]:
    api = HttpFoodAPI(server.url, timeout=0.5)
    yield api
    await api.close()


async def test_posts_the_exact_json_body(server: OrderServer, api: HttpFoodAPI) -> None:
    await api.order_food(1001, ["Pizza", "Cola"], idempotency_key=KEY)
    assert server.content_types == ["application/json"]
    assert json.loads(server.bodies[0]) == {"user_id": 1001, "items": ["Pizza", "Cola"]}
    assert server.keys == [KEY]


@pytest.mark.parametrize("status", [200, 201, 204])
async def test_any_2xx_is_success(server: OrderServer, api: HttpFoodAPI, status: int) -> None:
    server.status = status
    await api.order_food(1, ["Tea"], idempotency_key=KEY)
    assert len(server.bodies) == 1


@pytest.mark.parametrize("status", [301, 400, 500, 503])
async def test_other_statuses_fail(server: OrderServer, api: HttpFoodAPI, status: int) -> None:
    server.status = status
    with pytest.raises(FoodOrderError, match=f"HTTP {status}"):
        await api.order_food(1, ["Tea"], idempotency_key=KEY)


async def test_an_order_not_answered_is_sent_again_with_its_key_until_answered(
    server: OrderServer,
) -> None:
    server.first_statuses = [503, 429]  # a 5xx and a "not now": each waits a backoff
    api = HttpFoodAPI(server.url, timeout=0.5, retry_for=30)
    try:
        await api.order_food(1, ["Tea"], idempotency_key=KEY)
    finally:
        await api.close()
    assert server.keys == [KEY] * 3  # the same key every time: the service places it once
    assert len(server.orders) == 1


async def test_a_refused_order_is_final_and_a_silent_service_is_given_up_on(
    server: OrderServer,
) -> None:
    api = HttpFoodAPI(server.url, timeout=0.2, retry_for=1.5)
    try:
        server.status = 422
        with pytest.raises(FoodOrderError, match="refused the order: HTTP 422"):
            await api.order_food(1, ["Tea"], idempotency_key=KEY)
        assert len(server.bodies) == 1  # a decision is not retried
        server.status, server.delay = 200, 5.0
        started = asyncio.get_running_loop().time()
        with pytest.raises(FoodOrderError, match=r"did not answer within 0\.2 s \(tried \d+"):
            await api.order_food(1, ["Tea"], idempotency_key="1:8")
        assert asyncio.get_running_loop().time() - started < 1.5 + 1
        assert server.keys.count("1:8") >= 2
    finally:
        server.delay = 0.0
        await api.close()


async def test_a_slow_answer_fails_with_a_timeout(server: OrderServer) -> None:
    server.delay = 2.0
    api = HttpFoodAPI(server.url, timeout=0.2)
    try:
        with pytest.raises(FoodOrderError, match=r"did not answer within 0\.2 s"):
            await api.order_food(1, ["Tea"], idempotency_key=KEY)
    finally:
        await api.close()


async def test_connection_refused_fails() -> None:
    api = HttpFoodAPI(f"http://127.0.0.1:{free_port()}/orders", timeout=2)
    try:
        with pytest.raises(FoodOrderError, match="unreachable"):
            await api.order_food(1, ["Tea"], idempotency_key=KEY)
    finally:
        await api.close()


async def test_the_session_is_reused_and_closed(server: OrderServer, api: HttpFoodAPI) -> None:
    await api.order_food(1, ["Tea"], idempotency_key=KEY)
    session = api._session
    await api.order_food(1, ["Coffee"], idempotency_key=KEY)
    assert api._session is session
    await api.close()
    assert session is not None
    assert session.closed


async def test_without_a_url_orders_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    api = create_food_api(FoodApiSettings(url=None, _env_file=None))
    assert isinstance(api, LoggingFoodAPI)
    with caplog.at_level(logging.INFO):
        await api.order_food(1001, ["Pizza", "Cola"], idempotency_key=KEY)
    assert f"Order {KEY} for user 1001: Pizza, Cola" in caplog.text


def test_with_a_url_the_http_client_is_used() -> None:
    settings = FoodApiSettings(url=HttpUrl("http://food.example/orders"), _env_file=None)
    assert isinstance(create_food_api(settings), HttpFoodAPI)
