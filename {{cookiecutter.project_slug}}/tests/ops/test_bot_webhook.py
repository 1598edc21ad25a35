"""Webhook mode end to end: `python -m <bot>` with WEBHOOK_URL, updates POSTed to its server.

The Bot API is the HTTP stand-in on 127.0.0.1 (TELEGRAM_API_URL); Redis is real.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from {{ cookiecutter.project_slug }}.testing import FakeBotAPIServer, message_update

from ..conftest import RedisServer, free_port
from ..test_bot_food_api import OrderServer
from .bot_process import BotProcess
from .test_bot_e2e import ALICE, EMPTY_CART, GREETING, MAIN_MENU, TOKEN, current_node

PACKAGE = "{{ cookiecutter.project_slug }}"
SECRET = "webhook-secret_42"
PATH = "/telegram/updates"


class Replica:
    """One webhook bot process and a way to post updates to it."""

    def __init__(self, process: BotProcess, port: int) -> None:
        self.process = process
        self.port = port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def post(self, update: dict[str, Any], secret: str | None = SECRET) -> int:
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.base + PATH, json=update, headers=headers) as reply,
        ):
            return reply.status

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(self.base + path) as reply:
            return reply.status, await reply.text()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    if (await self.get("/readyz"))[0] == 200:
                        return
                except aiohttp.ClientError:
                    pass
                assert self.process.running, f"bot exited; log:\n{self.process.log()}"
                await asyncio.sleep(0.1)


StartReplica = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def start_replica(
    bot_api: FakeBotAPIServer, tmp_path: Path, redis_url: str, state_key: str
) -> AsyncIterator[StartReplica]:
    started: list[BotProcess] = []

    async def start(**settings: str) -> Replica:
        port = free_port()
        env = {
            "BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": bot_api.url,
            "REDIS_URL": redis_url,
            "STATE_KEY": state_key,
            "WEBHOOK_URL": f"https://bot.example.test{PATH}",
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_HOST": "127.0.0.1",
            "WEBHOOK_PORT": str(port),
            **settings,
        }
        process = BotProcess(PACKAGE, env, tmp_path / f"replica{len(started)}")
        started.append(process)
        await process.start()
        replica = Replica(process, port)
        await replica.wait_ready()
        return replica

    yield start
    for process in started:
        await process.kill()


_update_ids = iter(range(1, 1_000_000))


def update(text: str, user_id: int = ALICE) -> dict[str, Any]:
    return message_update(next(_update_ids), user_id, text)


async def say(api: FakeBotAPIServer, replica: Replica, text: str, expect: int) -> list[str]:
    before = len(api.sent_texts(ALICE))
    assert await replica.post(update(text)) == 200
    await api.wait_for(lambda: len(api.sent_texts(ALICE)) >= before + expect, 15, repr(text))
    return api.sent_texts(ALICE)[before:]


async def test_webhook_serves_the_food_flow_and_refuses_a_wrong_secret(
    bot_api: FakeBotAPIServer, start_replica: StartReplica
) -> None:
    replica = await start_replica()
    [set_webhook] = bot_api.calls("setWebhook")
    assert set_webhook.params["url"] == f"https://bot.example.test{PATH}"
    assert set_webhook.params["secret_token"] == SECRET
    assert sorted(json.loads(set_webhook.params["allowed_updates"])) == [
        "callback_query",
        "message",
    ]
    assert await replica.post(update("hi"), secret="wrong") == 401
    assert await replica.post(update("hi"), secret=None) == 401
    await asyncio.sleep(0.5)
    assert bot_api.sent_texts(ALICE) == []  # no handler ran

    assert await say(bot_api, replica, "hi", 1) == [GREETING]
    assert await say(bot_api, replica, "Yes", 2) == ["No worries, I've got you back!", EMPTY_CART]
    assert await say(bot_api, replica, "Pizza", 2) == [
        "Added Pizza",
        "What are you gonna order? Cart: Pizza",
    ]
    assert await say(bot_api, replica, "Finish", 3) == ["Ordering Pizza", "Ordered!", MAIN_MENU]

    status, metrics = await replica.get("/metrics")
    assert status == 200
    assert 'bot_updates_total{outcome="handled",type="message"} 4.0' in metrics
    assert 'bot_transitions_total{from_node="hungry",to_node="start"} 1.0' in metrics
    assert "bot_route_seconds_count 4.0" in metrics
    assert (await replica.get("/healthz")) == (200, "ok")
    assert await replica.process.stop(signal.SIGTERM) == 0
    assert TOKEN.split(":")[1] not in replica.process.log()
    assert SECRET not in replica.process.log()


async def test_two_replicas_keep_every_item_of_a_burst_spread_over_both(
    bot_api: FakeBotAPIServer, start_replica: StartReplica, redis_client: Redis, state_key: str
) -> None:
    first, second = await start_replica(), await start_replica()
    await say(bot_api, first, "hi", 1)
    await say(bot_api, second, "Yes", 2)
    items = [f"dish{n}" for n in range(50)]
    statuses = await asyncio.gather(
        *((first if n % 2 else second).post(update(item)) for n, item in enumerate(items))
    )
    assert statuses == [200] * 50
    await bot_api.wait_for(
        lambda: len([t for t in bot_api.sent_texts(ALICE) if t.startswith("Added ")]) == 50,
        60,
        "50 items added",
    )
    node = await current_node(redis_client, state_key, ALICE)
    assert sorted(node._data.order) == sorted(items)
    for replica in (first, second):
        assert await replica.process.stop(signal.SIGTERM) == 0


async def test_sigterm_mid_update_lets_the_reply_go_out_and_exits_0(
    bot_api: FakeBotAPIServer, start_replica: StartReplica
) -> None:
    orders = OrderServer(delay=2.0)
    await orders.start()
    try:
        replica = await start_replica(FOOD_API_URL=orders.url)
        await say(bot_api, replica, "hi", 1)
        await say(bot_api, replica, "Yes", 2)
        await say(bot_api, replica, "Pizza", 2)
        assert await replica.post(update("Finish")) == 200
        await asyncio.wait_for(orders.received.wait(), 15)
        assert await replica.process.stop(signal.SIGTERM) == 0
        assert bot_api.sent_texts(ALICE)[-3:] == ["Ordering Pizza", "Ordered!", MAIN_MENU]
    finally:
        await orders.close()


async def test_readyz_follows_redis(
    bot_api: FakeBotAPIServer,
    start_replica: StartReplica,
    start_redis: Callable[..., RedisServer],
) -> None:
    redis_server = start_redis()
    replica = await start_replica(REDIS_URL=redis_server.url, REDIS_RETRIES="0")
    assert (await replica.get("/readyz")) == (200, "ready")
    redis_server.stop()
    assert (await replica.get("/readyz")) == (503, "not ready: Redis does not answer")
    assert (await replica.get("/healthz")) == (200, "ok")  # the process itself is fine
    redis_server.start()
    await replica.wait_ready()
    assert await say(bot_api, replica, "hi", 1) == [GREETING]
    status, metrics = await replica.get("/metrics")
    assert status == 200
    assert "bot_redis_errors_total" in metrics
    assert await replica.process.stop(signal.SIGTERM) == 0


async def test_the_docker_healthcheck_asks_readyz_in_webhook_mode(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica()
    check = await asyncio.create_subprocess_exec(
        sys.executable, "-m", PACKAGE, "healthcheck",
        cwd=replica.process.workdir,
        env=replica.process.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await check.communicate()
    assert check.returncode == 0, err.decode()
    assert out.decode() == f"healthy: webhook server on port {replica.port} is ready\n"
    assert await replica.process.stop(signal.SIGTERM) == 0
