"""The chat's Redis: a throw-away `redis-server` by default, the one of REDIS_URL when asked.

The chat's made-up users would otherwise land in the bot's keys and among the recipients of the
next broadcast, so the bot's real Redis is used only with `--redis-from-env`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import TextIO
from urllib.parse import urlsplit

from pydantic import SecretStr
from redis.asyncio import Redis

from ..telegram.settings import BotSettings


class ChatError(Exception):
    """Chat can't start; the message is one line that says what to do."""


async def redis_answers(url: str) -> bool:
    """Whether a Redis answers at `url`: checked first, so a wrong URL is one line, not a trace."""
    client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(await client.ping())
    except Exception:  # any failure means "no usable Redis there"
        return False
    finally:
        await client.aclose()


@contextlib.contextmanager
def throwaway_redis() -> Iterator[str]:
    """A private `redis-server` on a free port of 127.0.0.1, keeping nothing, stopped on exit."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise ChatError(
            "chat starts a throw-away redis-server and there is none on PATH: install Redis "
            "(apt-get install redis-server, brew install redis), or use --redis-from-env to "
            "chat on the Redis of REDIS_URL"
        )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="chat-redis-") as workdir:
        server = subprocess.Popen(  # noqa: S603 - our own arguments, no shell
            [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_for_port(port, server)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(10)


def _wait_for_port(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ChatError(f"redis-server exited at start (port {port})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise ChatError(f"redis-server did not start on port {port} within 10 s")


@contextlib.asynccontextmanager
async def settings_with_redis(
    settings: BotSettings, out: TextIO, *, from_env: bool = False
) -> AsyncIterator[BotSettings]:
    """`settings` with a throw-away Redis; with `from_env`, REDIS_URL's (said so either way).

    The chat's made-up users would otherwise land in the bot's keys and among the recipients
    of the next broadcast: the bot's real data is used only when asked for.
    """
    if from_env:
        url = settings.redis.url.get_secret_value()
        if not await redis_answers(url):
            raise ChatError("--redis-from-env: no Redis answers at REDIS_URL")
        parts = urlsplit(url)
        where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
        print(
            f"Using the Redis of REDIS_URL ({where}): the chat's users are stored there.", file=out
        )
        yield settings
        return
    with throwaway_redis() as url:
        print(f"Using a throw-away redis-server at {url}: nothing is kept.", file=out)
        redis = settings.redis.model_copy(update={"url": SecretStr(url), "cluster": False})
        yield dataclasses.replace(settings, redis=redis)
