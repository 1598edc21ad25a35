"""Webhook mode end to end: `python -m <bot>` with WEBHOOK_URL, updates POSTed to its server.

The Bot API is the HTTP stand-in on 127.0.0.1 (TELEGRAM_API_URL); Redis is real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from botnodes.testing import FakeBotAPIServer, message_update

from ..conftest import RedisServer, free_port
from ..test_bot_food_api import OrderServer
from .bot_process import BotProcess
from .polling import ALICE, EMPTY_CART, GREETING, MAIN_MENU, PACKAGE, TOKEN, current_node
from .replicas import FROZEN, PATH, SECRET, Replica, StartReplica, frozen, say, update, update_ids


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
        "my_chat_member",
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
    # 100 replies to one chat: at Telegram's 1/s the limiter would spread them over 100 s;
    # this test is about losing nothing, so the chat's budget is the largest allowed.
    fast_chat = {"CHAT_RATE": "30", "CHAT_BURST": "20"}
    first, second = await start_replica(**fast_chat), await start_replica(**fast_chat)
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


async def test_the_docker_healthcheck_asks_readyz_where_webhook_host_listens(
    start_replica: StartReplica,
) -> None:
    # 127.0.0.2 is loopback too, but nothing listens on 127.0.0.1 at this port.
    replica = await start_replica(WEBHOOK_HOST="127.0.0.2")
    check = await asyncio.create_subprocess_exec(
        sys.executable, "-m", PACKAGE, "healthcheck",
        cwd=replica.process.workdir,
        env=replica.process.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await check.communicate()
    assert check.returncode == 0, err.decode()
    assert out.decode() == f"healthy: webhook server on 127.0.0.2:{replica.port} is ready\n"
    assert await replica.process.stop(signal.SIGTERM) == 0


async def raw_exchange(replica: Replica, request: bytes) -> bytes:
    """Send `request` as is and read until the server closes: for what aiohttp won't send."""
    reader, writer = await asyncio.open_connection(replica.host, replica.port)
    try:
        writer.write(request)
        async with asyncio.timeout(15):
            return await reader.read()
    finally:
        writer.close()


def delivery(body: bytes, secret: bytes = SECRET.encode(), path: str = PATH) -> bytes:
    return (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: bot\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nX-Telegram-Bot-Api-Secret-Token: " + secret
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


async def test_bad_deliveries_get_a_4xx_and_leave_no_traceback(
    bot_api: FakeBotAPIServer, start_replica: StartReplica
) -> None:
    replica = await start_replica()
    hi = json.dumps(update("hi")).encode()
    non_ascii = await raw_exchange(replica, delivery(hi, secret="секрет".encode()))
    assert non_ascii.startswith(b"HTTP/1.1 401 ")
    assert (await raw_exchange(replica, delivery(b"{not json"))).startswith(b"HTTP/1.1 400 ")
    not_an_update = delivery(b'{"message": "no update_id"}')
    assert (await raw_exchange(replica, not_an_update)).startswith(b"HTTP/1.1 400 ")
    # A type newer than this aiogram: counted and skipped, answered 200 (never to come back).
    unknown = {"update_id": 7_000_001, "future_thing": {"id": 1}}
    assert await replica.post(unknown) == 200
    assert await say(bot_api, replica, "hi", 1) == [GREETING]
    _, metrics = await replica.get("/metrics")
    assert 'bot_updates_total{outcome="skipped",type="unknown"} 1.0' in metrics
    assert 'bot_webhook_deliveries_refused_total{reason="not_an_update",status="400"} 2.0' in (
        metrics
    )
    assert 'bot_webhook_deliveries_refused_total{reason="wrong_secret",status="401"} 1.0' in (
        metrics
    )
    assert await replica.process.stop(signal.SIGTERM) == 0
    log = replica.process.log()
    assert "Traceback" not in log
    assert "never retrieved" not in log


@pytest.mark.parametrize("path", ["/tg%20hook", "/%D0%B1%D0%BE%D1%82/updates"])
async def test_a_webhook_path_with_escapes_is_served_where_telegram_posts(
    bot_api: FakeBotAPIServer, start_replica: StartReplica, path: str
) -> None:
    replica = await start_replica(WEBHOOK_URL=f"https://bot.example.test{path}")
    [set_webhook] = bot_api.calls("setWebhook")
    assert set_webhook.params["url"] == f"https://bot.example.test{path}"
    answer = await raw_exchange(replica, delivery(json.dumps(update("hi")).encode(), path=path))
    assert answer.startswith(b"HTTP/1.1 200 ")
    await bot_api.wait_for(lambda: bot_api.sent_texts(ALICE) == [GREETING], 15, "greeting")
    assert await replica.process.stop(signal.SIGTERM) == 0


async def test_stalled_connections_are_closed_and_the_server_keeps_serving(
    bot_api: FakeBotAPIServer, start_replica: StartReplica
) -> None:
    replica = await start_replica(WEBHOOK_READ_TIMEOUT="2")
    stalled = []
    for n in range(300):
        reader, writer = await asyncio.open_connection(replica.host, replica.port)
        if n % 2:  # headers trickled, never finished
            writer.write(b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: bot\r\n")
        else:  # headers sent, the body promised and never sent
            writer.write(delivery(b"{}")[:-2].replace(b"Length: 2", b"Length: 900"))
        await writer.drain()
        stalled.append((reader, writer))
    async with asyncio.timeout(2):  # served at once, stalled connections or not
        assert await replica.get("/healthz") == (200, "ok")
        assert await replica.post(update("hi")) == 200
    assert bot_api.sent_texts(ALICE) == [GREETING]  # answered 200 only once handled

    async def closed_by_server(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionResetError):
            while await reader.read(65536):
                pass  # a 408 for the stalled bodies, then the end

    async with asyncio.timeout(2 + 5):
        await asyncio.gather(*(closed_by_server(reader) for reader, _ in stalled))
    for _, writer in stalled:
        writer.close()
    assert (await replica.get("/healthz")) == (200, "ok")
    assert await replica.process.stop(signal.SIGTERM) == 0


async def test_start_up_failures_of_the_webhook_server_take_one_line(
    bot_api: FakeBotAPIServer, tmp_path: Path, redis_url: str
) -> None:
    env = {
        "BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": bot_api.url,
        "REDIS_URL": redis_url,
        "WEBHOOK_URL": f"https://bot.example.test{PATH}",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_HOST": "127.0.0.1",
    }
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = BotProcess(PACKAGE, {**env, "WEBHOOK_PORT": str(port)}, tmp_path / "busy")
        await busy.start()
        assert await busy.wait() == 1
    assert busy.log() == (
        f"Cannot start: cannot listen on WEBHOOK_HOST 127.0.0.1 WEBHOOK_PORT {port}: "
        "Address already in use\n"
    )
    bot_api.telegram.fail("setWebhook", status=400)
    refused = BotProcess(PACKAGE, {**env, "WEBHOOK_PORT": str(free_port())}, tmp_path / "refused")
    await refused.start()
    assert await refused.wait() == 1
    [line] = refused.log().splitlines()
    assert line.startswith(f"Cannot start: setWebhook failed at the Bot API ({bot_api.url}")


def rss_kib(pid: int) -> int:
    """The resident memory of process `pid` (Linux), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    [line] = [x for x in status.splitlines() if x.startswith("VmRSS:")]
    return int(line.split()[1])


async def taken(replica: Replica, posts: list[asyncio.Task[int | None]], count: int) -> None:
    """Wait until `count` deliveries are in flight, or answered (as the old code did)."""
    async with asyncio.timeout(15):
        while True:
            if sum(p.done() for p in posts) + await replica.in_flight() >= count:
                return
            await asyncio.sleep(0.05)


async def test_sigterm_answers_nothing_it_did_not_handle_and_ends_within_shutdown_timeout(
    bot_api: FakeBotAPIServer,
    start_replica: StartReplica,
    start_redis: Callable[..., RedisServer],
) -> None:
    redis_server = start_redis()
    replica = await start_replica(REDIS_URL=redis_server.url, SHUTDOWN_TIMEOUT="2", **FROZEN)
    users = range(2001, 2011)
    deliveries = {user: message_update(next(update_ids), user, "hi") for user in users}
    for user in users[:3]:  # answered 200 once handled: the greeting is already out
        assert await replica.post(deliveries[user]) == 200
        assert bot_api.sent_texts(user) == [GREETING]
    with frozen(redis_server):  # every update now hangs mid-way
        posts = [asyncio.create_task(replica.post_or_none(deliveries[u])) for u in users[3:]]
        await taken(replica, posts, len(posts))
        started = time.monotonic()
        assert await replica.process.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 2 + 1.5  # SHUTDOWN_TIMEOUT, waited once
        statuses = dict(zip(users[3:], await asyncio.gather(*posts), strict=True))
    # Telegram delivers again what got no 2xx; here, to a fresh replica.
    fresh = await start_replica(REDIS_URL=redis_server.url)
    for user, status in statuses.items():
        if status != 200:
            assert await fresh.post(deliveries[user]) == 200
    for user in users:  # every update handled, each exactly once
        assert bot_api.sent_texts(user) == [GREETING], (user, statuses)
    assert await fresh.process.stop(signal.SIGTERM) == 0


async def test_past_max_pending_updates_deliveries_get_503_and_memory_stays_flat(
    bot_api: FakeBotAPIServer,
    start_replica: StartReplica,
    start_redis: Callable[..., RedisServer],
) -> None:
    redis_server = start_redis()
    replica = await start_replica(REDIS_URL=redis_server.url, MAX_PENDING_UPDATES="5", **FROZEN)
    assert replica.process.process is not None
    pid = replica.process.process.pid
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}

    async def deliver(session: aiohttp.ClientSession, n: int) -> tuple[int, str | None]:
        body = update("hi", 4000 + n)
        async with session.post(replica.base + PATH, json=body, headers=headers) as reply:
            return reply.status, reply.headers.get("Retry-After")

    with frozen(redis_server):
        held = [asyncio.create_task(replica.post_or_none(update("hi", 3000 + n))) for n in range(5)]
        await taken(replica, held, 5)
        before = rss_kib(pid)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
            answers = await asyncio.gather(*(deliver(session, n) for n in range(2000)))
        assert set(answers) == {(503, "1")}  # Telegram delivers them again later
        assert await replica.in_flight() == 5
        grown = rss_kib(pid) - before
        assert grown < 20 * 1024, f"RSS grew {grown} KiB for 2,000 refused deliveries"
    assert await asyncio.gather(*held) == [200] * 5
    assert all(bot_api.sent_texts(3000 + n) == [GREETING] for n in range(5))
    assert await replica.process.stop(signal.SIGTERM) == 0
