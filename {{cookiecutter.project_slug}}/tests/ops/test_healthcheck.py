"""`python -m {{ cookiecutter.project_slug }} healthcheck`: a real Redis and a fake Bot API."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.exceptions

from botnodes.telegram.healthcheck import CheckFailedError, check, ping_redis
from botnodes.telegram.settings import load_settings
from botnodes.testing import FakeBotAPIServer

from {{ cookiecutter.project_slug }}.settings import Settings

from ..conftest import free_port
from .bot_process import SETTING_NAMES, BotProcess

PACKAGE = "{{ cookiecutter.project_slug }}"
TOKEN = "123456:health-check-SECRET-token"


@pytest.fixture
async def bot_api() -> AsyncIterator[FakeBotAPIServer]:
    server = FakeBotAPIServer(TOKEN)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def settings_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Settings]:
    """Return `settings_from(**env)`: settings read from exactly these variables, no `.env`."""

    def load(**env: str) -> Settings:
        for name in SETTING_NAMES:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        return load_settings(Settings, env_file=None)

    return load


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


async def test_healthy_when_redis_and_bot_api_answer(
    redis_url: str, bot_api: FakeBotAPIServer, settings_from: Callable[..., Settings]
) -> None:
    settings = settings_from(BOT_TOKEN=TOKEN, REDIS_URL=redis_url, TELEGRAM_API_URL=bot_api.url)

    summary = await check(settings)

    assert "@food_test_bot" in summary
    assert [call.method for call in bot_api.telegram.calls] == ["getMe"]


async def test_dead_redis_is_unhealthy_and_named(
    bot_api: FakeBotAPIServer, settings_from: Callable[..., Settings]
) -> None:
    settings = settings_from(
        BOT_TOKEN=TOKEN,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        TELEGRAM_API_URL=bot_api.url,
    )

    with pytest.raises(CheckFailedError) as failure:
        await check(settings)

    reason = str(failure.value)
    assert reason.startswith("Redis: ")
    assert "Bot API" not in reason
    assert "\n" not in reason


async def test_rejected_token_is_unhealthy_without_printing_it(
    redis_url: str, bot_api: FakeBotAPIServer, settings_from: Callable[..., Settings]
) -> None:
    wrong_token = "654321:some-OTHER-secret"
    settings = settings_from(
        BOT_TOKEN=wrong_token, REDIS_URL=redis_url, TELEGRAM_API_URL=bot_api.url
    )

    with pytest.raises(CheckFailedError) as failure:
        await check(settings)

    reason = str(failure.value)
    assert reason.startswith("Bot API: ")
    assert "Unauthorized" in reason
    assert wrong_token not in reason


async def test_unreachable_bot_api_is_unhealthy(
    redis_url: str, settings_from: Callable[..., Settings]
) -> None:
    settings = settings_from(
        BOT_TOKEN=TOKEN, REDIS_URL=redis_url, TELEGRAM_API_URL=f"http://127.0.0.1:{free_port()}"
    )

    with pytest.raises(CheckFailedError, match=r"^Bot API: "):
        await check(settings)


async def test_hung_redis_fails_fast(
    silent_port: int, settings_from: Callable[..., Settings]
) -> None:
    settings = settings_from(BOT_TOKEN=TOKEN, REDIS_URL=f"redis://127.0.0.1:{silent_port}/0")
    started = time.monotonic()

    with pytest.raises((TimeoutError, redis.exceptions.TimeoutError)):
        await ping_redis(settings, timeout=0.5)

    assert time.monotonic() - started < 3


async def healthcheck_process(tmp_path: Path, **settings: str) -> tuple[int, str]:
    process = BotProcess(PACKAGE, settings, tmp_path, "healthcheck")
    await process.start()
    try:
        code = await process.wait(timeout=30)
    finally:
        await process.kill()
    return code, process.log()


async def test_command_exits_0_when_healthy(
    tmp_path: Path, redis_url: str, bot_api: FakeBotAPIServer
) -> None:
    code, output = await healthcheck_process(
        tmp_path, BOT_TOKEN=TOKEN, REDIS_URL=redis_url, TELEGRAM_API_URL=bot_api.url
    )

    assert code == 0, output
    assert output.startswith("healthy: ")
    assert TOKEN not in output


async def test_command_exits_1_with_one_line_when_redis_is_down(
    tmp_path: Path, bot_api: FakeBotAPIServer
) -> None:
    code, output = await healthcheck_process(
        tmp_path,
        BOT_TOKEN=TOKEN,
        REDIS_URL=f"redis://:hunter2-password@127.0.0.1:{free_port()}/0",
        TELEGRAM_API_URL=bot_api.url,
    )

    assert code == 1, output
    lines = output.splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("unhealthy: Redis: ")
    assert TOKEN not in output
    assert "hunter2-password" not in output


async def test_command_exits_1_on_a_bad_setting(tmp_path: Path) -> None:
    # Docker reserves exit status 2 of a health check, which the bot uses for bad settings.
    code, output = await healthcheck_process(tmp_path, BOT_TOKEN="not-a-token")

    assert code == 1, output
    assert len(output.splitlines()) == 1, output
    assert output.startswith("Configuration error: BOT_TOKEN"), output
    assert "not-a-token" not in output


async def test_command_does_not_hang_on_a_hung_bot_api(
    tmp_path: Path, redis_url: str, silent_port: int
) -> None:
    started = asyncio.get_running_loop().time()

    code, output = await healthcheck_process(
        tmp_path,
        BOT_TOKEN=TOKEN,
        REDIS_URL=redis_url,
        TELEGRAM_API_URL=f"http://127.0.0.1:{silent_port}",
    )

    assert code == 1, output
    assert output.startswith("unhealthy: Bot API: ")
    # Inside the Dockerfile's HEALTHCHECK --timeout=15s, the process's own start included.
    assert asyncio.get_running_loop().time() - started < 15
