"""Webhook replicas for the ops tests: `Replica` (one process and a way to post to it),
`start_replica` (a fixture, shared through conftest.py), updates and a frozen Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botnodes.testing import FakeBotAPIServer, message_update

from ..conftest import RedisServer, free_port
from .bot_process import BotProcess
from .polling import ALICE, PACKAGE, TOKEN

SECRET = "webhook-secret_42"
PATH = "/telegram/updates"


class Replica:
    """One webhook bot process and a way to post updates to it."""

    def __init__(self, process: BotProcess, port: int, host: str = "127.0.0.1") -> None:
        self.process = process
        self.port = port
        self.host = host

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def post(self, update: dict[str, Any], secret: str | None = SECRET) -> int:
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.base + PATH, json=update, headers=headers) as reply,
        ):
            return reply.status

    async def post_or_none(self, update: dict[str, Any]) -> int | None:
        """The delivery's status, or None when the server hung up without answering."""
        try:
            return await self.post(update)
        except aiohttp.ClientConnectionError:
            return None

    async def in_flight(self) -> float:
        status, metrics = await self.get("/metrics")
        assert status == 200
        for line in metrics.splitlines():
            if line.startswith("bot_webhook_deliveries_in_flight "):
                return float(line.split()[1])
        return 0.0

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
        host = settings.get("WEBHOOK_HOST", "127.0.0.1")
        env = {
            "BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": bot_api.url,
            "REDIS_URL": redis_url,
            "STATE_KEY": state_key,
            "WEBHOOK_URL": f"https://bot.example.test{PATH}",
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_PORT": str(port),
            **settings,
            "WEBHOOK_HOST": host,
        }
        process = BotProcess(PACKAGE, env, tmp_path / f"replica{len(started)}")
        started.append(process)
        await process.start()
        replica = Replica(process, port, host)
        await replica.wait_ready()
        return replica

    yield start
    for process in started:
        await process.kill()


update_ids = iter(range(1, 1_000_000))


def update(text: str, user_id: int = ALICE) -> dict[str, Any]:
    return message_update(next(update_ids), user_id, text)


async def say(api: FakeBotAPIServer, replica: Replica, text: str, expect: int) -> list[str]:
    before = len(api.sent_texts(ALICE))
    assert await replica.post(update(text)) == 200
    await api.wait_for(lambda: len(api.sent_texts(ALICE)) >= before + expect, 15, repr(text))
    return api.sent_texts(ALICE)[before:]


#: Redis frozen (SIGSTOP) holds every update mid-way for this long, unless cancelled.
FROZEN = {"REDIS_SOCKET_TIMEOUT": "60", "REDIS_RETRIES": "0", "LOCK_TTL": "3"}


def frozen(redis_server: RedisServer) -> contextlib.AbstractContextManager[None]:
    """Redis stops answering (SIGSTOP) until the block ends, however it ends."""
    return redis_server.frozen()
