"""The baked bot in webhook mode, over HTTP on 127.0.0.1: one replica, then two on one Redis.

Each replica is a real `python -m <package>` process with WEBHOOK_URL set; the Bot API is the
bake's own stand-in served over HTTP (TELEGRAM_API_URL). Users walk the food flow; each update
is POSTed to a replica (round robin) as Telegram would, at most `in_flight` at once, and the run
ends when every reply has reached the stand-in. On two cores the point of two replicas is that
nothing breaks and nothing is lost, not the speed-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from .flows import FLOW, expected_first_flow, username

TOKEN = "123456:bench-webhook-token"
SECRET = "bench-webhook-secret"
PATH = "/telegram/updates"
BASE_USER = 20_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def replicas(
    count: int, project: Path, api_url: str, redis_url: str, prefix: str
) -> AsyncIterator[list[str]]:
    """Start `count` webhook processes of the bake; yield their update URLs once all are ready."""
    processes: list[asyncio.subprocess.Process] = []
    urls: list[str] = []
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = str(project)
    try:
        for _ in range(count):
            port = free_port()
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", project.name,
                cwd=project.parent,
                env={
                    **env,
                    "BOT_TOKEN": TOKEN,
                    "TELEGRAM_API_URL": api_url,
                    "REDIS_URL": redis_url,
                    "STATE_KEY": prefix,
                    "LOG_LEVEL": "WARNING",
                    "WEBHOOK_URL": f"https://bench.example.test{PATH}",
                    "WEBHOOK_SECRET": SECRET,
                    "WEBHOOK_HOST": "127.0.0.1",
                    "WEBHOOK_PORT": str(port),
                },
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            processes.append(process)
            urls.append(f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession() as session:
            for url in urls:
                await _wait_ready(session, url)
        yield [url + PATH for url in urls]
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            await process.wait()


async def _wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url + "/readyz") as reply:
                if reply.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the webhook replica at {url} never became ready")


#: Replies per step of FLOW: the greeting, "Yes" (2), each item (2), "Finish" (3).
STEP_REPLIES = [1, 2, *([2] * (len(FLOW) - 3)), 3]
UPDATE_IDS = itertools.count(1)


async def walk(
    session: aiohttp.ClientSession,
    targets: itertools.cycle[str],
    fake: Any,
    api: Any,
    user_id: int,
    slots: asyncio.Semaphore,
) -> None:
    """One user's flow: POST an update, wait for its replies, then send the next one."""
    expected = 0
    for text, replies in zip(FLOW, STEP_REPLIES, strict=True):
        expected += replies
        update = fake.message_update(next(UPDATE_IDS), user_id, text, username=username(user_id))
        async with slots:
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            async with session.post(next(targets), json=update, headers=headers) as reply:
                if reply.status != 200:
                    raise RuntimeError(f"a replica answered {reply.status}")
        await api.wait_for(
            lambda want=expected: len(api.telegram.texts.get(user_id, ())) >= want,
            60,
            f"replies of user {user_id}",
        )


async def run(
    fake: Any, project: Path, redis_url: str, users: int, in_flight: int, count: int
) -> dict[str, Any]:
    """`users` users through `count` replicas; updates/s and what was lost."""
    api = fake.FakeBotAPIServer(TOKEN)
    await api.start()
    try:
        prefix = f"bench-webhook-{count}-{os.getpid()}"
        async with replicas(count, project, api.url, redis_url, prefix) as targets:
            slots = asyncio.Semaphore(in_flight)
            cycle = itertools.cycle(targets)
            connector = aiohttp.TCPConnector(limit=in_flight)
            async with aiohttp.ClientSession(connector=connector) as session:
                began = time.perf_counter()
                await asyncio.gather(
                    *(walk(session, cycle, fake, api, BASE_USER + n, slots) for n in range(users))
                )
                elapsed = time.perf_counter() - began
        wrong = sum(
            api.telegram.texts.get(BASE_USER + n) != expected_first_flow(BASE_USER + n)
            for n in range(users)
        )
        return {
            "replicas": count,
            "users": users,
            "updates": users * len(FLOW),
            "updates_per_s": users * len(FLOW) / elapsed,
            "users_with_wrong_replies": wrong,
        }
    finally:
        await api.close()


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "## Webhook mode over HTTP on 127.0.0.1",
        "",
        "| replicas | users | updates | updates/s | users with a wrong or missing reply |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['replicas']} | {r['users']:,} | {r['updates']:,} | {r['updates_per_s']:,.0f} "
        f"| {r['users_with_wrong_replies']} |"
        for r in results
    ]
    return "\n".join(lines)
