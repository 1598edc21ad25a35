"""`python -m <package> healthcheck`: is this bot able to work right now?

The Docker HEALTHCHECK runs it. It loads the same settings as the bot, then asks Redis for PING
and the Bot API (Telegram, or the server in TELEGRAM_API_URL) for getMe, both at once and with
short timeouts. Exit 0 when both answer; otherwise exit 1 with one line on stderr naming what
failed. Secrets (the bot token, a Redis password) are masked in that line.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable

import aiohttp

from .app import create_bot, secrets_of
from .logging_setup import escape_controls, mask
from .redis_connection import create_redis
from .settings import BotSettings

#: Seconds each check may take; Docker's HEALTHCHECK --timeout must leave room for start-up.
CHECK_TIMEOUT = 5.0

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1


class CheckFailedError(Exception):
    """A dependency did not answer; the message is one line."""


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


async def ping_redis(settings: BotSettings, timeout: float = CHECK_TIMEOUT) -> None:  # noqa: ASYNC109
    """PING the configured Redis once, without the bot's retries."""
    redis_settings = settings.redis.model_copy(
        update={"socket_timeout": min(settings.redis.socket_timeout, timeout), "retries": 0}
    )
    client = create_redis(redis_settings)
    try:
        async with asyncio.timeout(timeout):
            await client.ping()
    finally:
        await client.aclose()


async def get_me(settings: BotSettings, timeout: float = CHECK_TIMEOUT) -> str:  # noqa: ASYNC109
    """Call getMe on the configured Bot API server; return the bot's @username."""
    bot = create_bot(settings.telegram)
    try:
        async with asyncio.timeout(timeout):
            me = await bot.get_me(request_timeout=max(int(timeout), 1))
    finally:
        await bot.session.close()
    return f"@{me.username}" if me.username else f"id {me.id}"


async def _named(name: str, check: Awaitable[object]) -> object:
    try:
        return await check
    except TimeoutError:
        raise CheckFailedError(f"{name}: no answer within {CHECK_TIMEOUT:g}s") from None
    except Exception as exc:
        raise CheckFailedError(f"{name}: {_describe(exc)}") from exc


def local_address(host: str) -> str:
    """Where this machine reaches a server listening on WEBHOOK_HOST (a URL's host part)."""
    if host in {"", "0.0.0.0"}:  # noqa: S104 - every interface: loopback is one of them
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


async def ready_endpoint(
    settings: BotSettings,
    timeout: float = CHECK_TIMEOUT,  # noqa: ASYNC109
) -> str:
    """Webhook mode: ask the running server's /readyz (Redis and the webhook as it sees them)."""
    url = f"http://{local_address(settings.webhook.host)}:{settings.webhook.port}/readyz"
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session, session.get(url) as reply:
        text = (await reply.text()).strip()
        if reply.status != 200:
            raise CheckFailedError(f"/readyz answered {reply.status}: {text}")
    return text


async def check(settings: BotSettings) -> str:
    """Run both checks concurrently; return a summary or raise `CheckFailedError`.

    In webhook mode the server itself is asked (`/readyz`), which covers both.
    """
    if settings.webhook.url is not None:
        await _named("webhook server", ready_endpoint(settings))
        where = f"{local_address(settings.webhook.host)}:{settings.webhook.port}"
        return f"webhook server on {where} is ready"
    results = await asyncio.gather(
        _named("Redis", ping_redis(settings)),
        _named("Bot API", get_me(settings)),
        return_exceptions=True,
    )
    failures = [str(result) for result in results if isinstance(result, BaseException)]
    if failures:
        raise CheckFailedError("; ".join(failures))
    return f"Redis answered PING, Bot API answered getMe as {results[1]}"


def run_healthcheck(settings: BotSettings) -> int:
    """The `healthcheck` command: print one line, return the exit status."""
    secrets = secrets_of(settings)
    try:
        summary = asyncio.run(check(settings))
    except CheckFailedError as exc:
        print(mask(escape_controls(f"unhealthy: {exc}"), secrets), file=sys.stderr)
        return EXIT_UNHEALTHY
    print(mask(f"healthy: {summary}", secrets))
    return EXIT_HEALTHY
