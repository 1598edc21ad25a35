"""A broadcast is at most once: an unreadable answer is never retried, a 429 pauses every worker,
and a claim repeated after its answer was lost gets its own users back (docs/send-limits.md).

Real Redis, the Bot API stand-in in process (and over HTTP, for a real connection reset and a
proxy's HTML page); tests/ops/test_broadcast_outage.py takes Redis away mid-job.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from pydantic import SecretStr
from redis.asyncio import Redis

from botnodes.telegram.app import add_telegram_rules
from botnodes.telegram.broadcast import Broadcast
from botnodes.telegram.broadcast_command import run_job
from botnodes.telegram.broadcast_job import CLAIM_SCRIPT, JOB_TTL_SECONDS
from botnodes.telegram.recipients import SHARDS, Recipients
from botnodes.telegram.send_limits import SendLimiter
from botnodes.telegram.settings import SendLimitSettings, TelegramSettings
from botnodes.testing import FakeBotAPIServer, FakeSession, FakeTelegram

from {{ cookiecutter.project_slug }}.settings import Settings

from ..conftest import E2E_TOKEN

TEXT = "Soup of the day!"
HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
UNREADABLE = "unconfirmed, not sent again"


def chat_is(chat: int) -> Callable[[dict[str, Any]], bool]:
    return lambda params: int(params["chat_id"]) == chat


async def registered(redis: Redis, state_key: str, users: Iterable[int]) -> Recipients:
    recipients = Recipients(redis, state_key)
    for user in users:
        await recipients.add(user)
    return recipients


def make_bot(session: BaseSession, token: str, call_timeout: float = 60.0) -> Bot:
    """A Bot with the limits and retries the running bot has (TELEGRAM_CALL_TIMEOUT too)."""
    telegram = TelegramSettings(
        bot_token=SecretStr(token), telegram_call_timeout=call_timeout, _env_file=None
    )
    add_telegram_rules(session, telegram)
    return Bot(token, session=session)


def limiter(redis: Redis, state_key: str, rate: float = 1000) -> SendLimiter:
    return SendLimiter(redis, state_key, SendLimitSettings(_env_file=None, broadcast_rate=rate))


async def claimed_users(redis: Redis, recipients: Recipients, job_id: str) -> int:
    """Users in the job's record (claimed, whatever came of it), over every shard."""
    count = 0
    for shard in range(SHARDS):
        fields = await redis.hkeys(recipients.job_key(shard, job_id))
        names = [f.decode() if isinstance(f, bytes) else str(f) for f in fields]
        count += len([name for name in names if not name.startswith(("#", "!"))])
    return count


def unconfirmed_summary(job_id: str, sent: int, unknown: int) -> str:
    return (
        f"Broadcast {job_id}: sent {sent}, skipped as blocked 0, failed 0, "
        f"unconfirmed {unknown} ({unknown} sent without a readable answer (a dropped "
        "connection, a timeout or a proxy's error page): they may have got it; none is sent "
        "again, so nobody gets it twice)\n"
    )


async def check_sent_at_most_once(  # noqa: PLR0917 - the test's parts, in its words
    telegram: FakeTelegram,
    redis: Redis,
    recipients: Recipients,
    job: Broadcast,
    users: list[int],
    unreadable: set[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = Counter(int(c.params["chat_id"]) for c in telegram.attempts("sendMessage"))
    assert attempts == Counter(users)  # one request per chat, never retried
    counts = await job.counts()
    assert (counts.sent, counts.blocked, counts.failed, counts.unconfirmed) == (
        len(users) - len(unreadable),  # exactly what Telegram answered ok
        0,
        0,
        len(unreadable),
    )
    assert counts.done == await claimed_users(redis, recipients, "soup") == len(users)
    lines = [r for r in caplog.records if UNREADABLE in r.getMessage()]
    assert sorted(int(r.getMessage().split()[3]) for r in lines) == sorted(unreadable)
    assert all("\n" not in r.getMessage() for r in lines)
    assert [r for r in caplog.records if r.exc_info or r.exc_text] == []  # no traceback


async def test_a_send_without_a_readable_answer_is_not_retried_and_counted_unconfirmed(
    settings: Settings, redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    users = list(range(8000, 8020))
    recipients = await registered(redis_client, settings.state.state_key, users)
    telegram = FakeTelegram()
    # Lost before Telegram had it, or after it delivered: the bot can't tell which.
    telegram.fail("sendMessage", drop=True, match=chat_is(8000))  # connection reset
    telegram.fail("sendMessage", drop=True, delivered=True, match=chat_is(8001))
    telegram.fail("sendMessage", stall=True, match=chat_is(8002))  # no answer in time
    telegram.fail("sendMessage", status=500, match=chat_is(8003))
    telegram.fail("sendMessage", status=503, delivered=True, match=chat_is(8004))
    telegram.fail("sendMessage", status=502, body=HTML_502, delivered=True, match=chat_is(8005))
    unreadable = set(range(8000, 8006))
    bot = make_bot(FakeSession(telegram), settings.telegram.bot_token.get_secret_value(), 1.0)
    job = Broadcast(
        bot, recipients, limiter(redis_client, settings.state.state_key), job_id="soup", text=TEXT
    )
    out = io.StringIO()
    with caplog.at_level(logging.INFO):
        assert await run_job(job, "soup", dry_run=False, out=out) == 0
    assert out.getvalue() == unconfirmed_summary("soup", 14, 6)
    await check_sent_at_most_once(
        telegram, redis_client, recipients, job, users, unreadable, caplog
    )


async def test_over_http_a_reset_connection_or_a_proxys_html_page_is_not_sent_again(
    settings: Settings,
    redis_client: Redis,
    bot_api: FakeBotAPIServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    users = list(range(8100, 8110))
    recipients = await registered(redis_client, settings.state.state_key, users)
    telegram = bot_api.telegram
    telegram.fail("sendMessage", drop=True, delivered=True, match=chat_is(8100))  # reset
    telegram.fail("sendMessage", status=502, body=HTML_502, match=chat_is(8101))
    telegram.fail("sendMessage", status=500, delivered=True, match=chat_is(8102))
    session = AiohttpSession(api=TelegramAPIServer.from_base(bot_api.url))
    bot = make_bot(session, E2E_TOKEN)
    job = Broadcast(
        bot, recipients, limiter(redis_client, settings.state.state_key), job_id="soup", text=TEXT
    )
    out = io.StringIO()
    try:
        with caplog.at_level(logging.INFO):
            assert await run_job(job, "soup", dry_run=False, out=out) == 0
    finally:
        await session.close()
    assert out.getvalue() == unconfirmed_summary("soup", 7, 3)
    unreadable = {8100, 8101, 8102}
    await check_sent_at_most_once(
        telegram, redis_client, recipients, job, users, unreadable, caplog
    )


async def test_a_429_pauses_the_job_in_every_worker(
    settings: Settings, redis_client: Redis
) -> None:
    """Two workers share a job at 100 messages a second; Telegram answers one send 429
    with retry_after=1. Without the shared pause the other worker would go on sending
    (about 100 in that second); with it, at most what it let go before hearing of it."""
    users = list(range(8200, 8400))
    recipients = await registered(redis_client, settings.state.state_key, users)
    telegram = FakeTelegram()
    # The 60th send is refused, whoever makes it (well inside the job, whichever shard).
    telegram.fail(
        "sendMessage",
        status=429,
        retry_after=1,
        match=lambda _: len(telegram.attempts("sendMessage")) >= 59,
    )
    bot = make_bot(FakeSession(telegram), settings.telegram.bot_token.get_secret_value())
    pace = limiter(redis_client, settings.state.state_key, rate=100)
    jobs = [Broadcast(bot, recipients, pace, job_id="flood", text=TEXT) for _ in range(2)]
    outputs = [io.StringIO(), io.StringIO()]
    statuses = await asyncio.gather(
        *(
            run_job(job, "flood", dry_run=False, out=out)
            for job, out in zip(jobs, outputs, strict=True)
        )
    )
    assert statuses == [0, 0]
    expected = "Broadcast flood: sent 200, skipped as blocked 0, failed 0\n"
    assert outputs[0].getvalue() == outputs[1].getvalue() == expected
    sends = telegram.attempts("sendMessage")
    [refused] = [call for call in sends if not call.ok]
    got = Counter(int(call.params["chat_id"]) for call in sends if call.ok)
    assert got == Counter(users)  # everyone once, the refused one too
    inside = [call for call in sends if call.ok and refused.at < call.at < refused.at + 1.0]
    assert len(inside) <= 2, f"{len(inside)} sends inside the 429's wait"
    assert sum(1 for call in sends if call.at > refused.at + 1.0) > 100  # the job went on


async def test_a_claim_repeated_after_its_answer_was_lost_returns_the_same_users(
    redis_client: Redis, state_key: str
) -> None:
    recipients = Recipients(redis_client, state_key)
    claim = redis_client.register_script(CLAIM_SCRIPT)
    keys = [recipients.blocked_key(0), recipients.job_key(0, "menu")]
    await redis_client.sadd(recipients.blocked_key(0), "13")

    async def claim_as(token: str, previous: str, *users: int) -> list[int]:
        claimed = await claim(keys=keys, args=[JOB_TTL_SECONDS, token, previous, *users])
        return sorted(int(user) for user in claimed)

    assert await claim_as("p1.1", "", 11, 12, 13) == [11, 12]
    # Its answer lost (a restart, a dropped connection): the same call gets the same users,
    # not an empty list (which would leave 11 and 12 claimed and never sent).
    assert await claim_as("p1.1", "", 11, 12, 13) == [11, 12]
    assert await claim_as("p2.1", "", 11, 12, 14) == [14]  # another worker: only the rest
    assert await claim_as("p1.2", "p1.1", 11, 15) == [15]  # the next call forgets the first
    assert not await redis_client.hexists(keys[1], "!p1.1")
    assert await claim_as("p1.2", "p1.1", 11, 15) == [15]
    record = await redis_client.hgetall(keys[1])
    assert (record[b"#c"], record[b"#b"]) == (b"4", b"1")  # counted once, however often asked
