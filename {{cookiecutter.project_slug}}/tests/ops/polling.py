"""Polling bot processes for the ops tests: `start_bot` (a fixture, shared through
conftest.py), the flow's texts and what a test reads back (the stored node, the log).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot
from redis.asyncio import Redis

from botnodes.telegram.app import create_languages, create_nodes
from botnodes.testing import FakeBotAPIServer, FakeSession

from {{ cookiecutter.project_slug }}.main import BOT, create_ctx

from ..conftest import E2E_TOKEN, make_settings
from .bot_process import BotProcess

PACKAGE = "{{ cookiecutter.project_slug }}"
TOKEN = E2E_TOKEN
ALICE = 5001

GREETING = "Hello, alice! Are you hungry?"
MAIN_MENU = "Again main menu! Are you hungry?"
EMPTY_CART = "What are you gonna order? Cart: Empty"

StartBot = Callable[..., Awaitable[BotProcess]]


@pytest.fixture
async def start_bot(
    bot_api: FakeBotAPIServer, tmp_path: Path, redis_url: str, state_key: str
) -> AsyncIterator[StartBot]:
    """Start bot processes wired to `bot_api`; all are killed after the test."""
    started: list[BotProcess] = []

    async def start(**settings: str) -> BotProcess:
        env = {
            "BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": bot_api.url,
            "REDIS_URL": redis_url,
            "STATE_KEY": state_key,
            "LOG_LEVEL": "DEBUG",
            **settings,
        }
        process = BotProcess(PACKAGE, env, tmp_path / f"bot{len(started)}")
        started.append(process)
        polls = len(bot_api.calls("getUpdates"))
        await process.start()
        await bot_api.wait_polling(since=polls)
        return process

    yield start
    for process in started:
        await process.kill()


async def current_node(redis: Redis, state_key: str, user_id: int) -> Any:
    """The node botnodes has stored for the user, read through the bot's own registry."""
    settings = make_settings(state_key)
    bot = Bot(TOKEN, session=FakeSession())
    ctx = create_ctx(bot, create_languages(BOT, settings, redis), settings)
    return await create_nodes(BOT, settings, redis, ctx).user(user_id).get_node()


def assert_clean_log(process: BotProcess) -> None:
    log = process.log()
    assert TOKEN not in log
    assert TOKEN.split(":")[1] not in log
    assert "Traceback" not in log


async def wait_for_log(process: BotProcess, text: str, timeout: float = 30.0) -> None:
    """Wait until the process has logged `text` (it polls a file, so it sleeps between looks)."""
    async with asyncio.timeout(timeout):
        while text not in process.log():  # noqa: ASYNC110 - the log is a file, not an event
            await asyncio.sleep(0.05)
