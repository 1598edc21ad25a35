"""The registry of users, blocked users, and a broadcast job run in process by two workers.

Real Redis and the Bot API stand-in enforcing Telegram's rates; tests/ops/test_broadcast.py
runs the command as processes and kills one.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter
from typing import Any

from aiogram import Bot
from redis.asyncio import Redis

from botnodes.telegram.app import add_telegram_rules
from botnodes.telegram.broadcast import Broadcast
from botnodes.telegram.broadcast_command import run_job
from botnodes.telegram.recipients import Recipients
from botnodes.telegram.send_limits import SendLimiter
from botnodes.telegram.settings import SendLimitSettings
from botnodes.testing import BotTestClient, FakeSession, FakeTelegram
from botnodes.testing.fake_bot_api import BOT_USER, TelegramRates

from {{ cookiecutter.project_slug }}.settings import Settings

TEXT = "Soup of the day!"


def membership_update(update_id: int, user_id: int, status: str) -> dict[str, Any]:
    """`my_chat_member`: the user blocked the bot ("kicked") or came back ("member")."""
    user = {"id": user_id, "is_bot": False, "first_name": "Alice"}
    new: dict[str, Any] = {"status": status, "user": BOT_USER}
    if status == "kicked":
        new["until_date"] = 0
    return {
        "update_id": update_id,
        "my_chat_member": {
            "chat": {"id": user_id, "type": "private", "first_name": "Alice"},
            "from": user,
            "date": int(time.time()),
            "old_chat_member": {"status": "member", "user": BOT_USER},
            "new_chat_member": new,
        },
    }


async def sadd_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_sadd", {}).get("calls", 0))


async def test_a_user_is_registered_once_per_process_not_per_update(
    client: BotTestClient, redis_client: Redis, settings: Settings
) -> None:
    recipients = Recipients(redis_client, settings.state.state_key)
    before = await sadd_calls(redis_client)
    alice = client.user(3001)
    for text in ("hi", "Yes", "Pizza"):
        await alice.send(text)
    assert await sadd_calls(redis_client) - before == 1
    assert await redis_client.sismember(recipients.shard_key(recipients.shard_of(3001)), "3001")


async def test_my_chat_member_marks_and_unmarks_a_blocked_user(
    client: BotTestClient, redis_client: Redis, settings: Settings
) -> None:
    recipients = Recipients(redis_client, settings.state.state_key)
    blocked = recipients.blocked_key(recipients.shard_of(3002))
    await client.feed(membership_update(client.next_update_id(), 3002, "kicked"))
    assert await redis_client.sismember(blocked, "3002")
    await client.feed(membership_update(client.next_update_id(), 3002, "member"))
    assert not await redis_client.sismember(blocked, "3002")


async def test_two_workers_share_a_job_skip_the_blocked_and_send_everyone_once(
    settings: Settings, redis_client: Redis
) -> None:
    users = list(range(4000, 4060))
    blocked, forbidden, not_found = set(users[:5]), set(users[5:8]), users[8]
    recipients = Recipients(redis_client, settings.state.state_key)
    for user in users:
        await recipients.add(user)
    for user in blocked:
        await recipients.block(user)
    telegram = FakeTelegram()
    # 55 calls against 40 a second: unpaced, they would be refused; paced at 36, none is.
    rates = telegram.enforce_rates(TelegramRates(per_second=40))
    telegram.fail("sendMessage", status=403, times=100, match=lambda p: p["chat_id"] in forbidden)
    telegram.fail("sendMessage", status=400, times=100, match=lambda p: p["chat_id"] == not_found)
    session = FakeSession(telegram)
    limiter = SendLimiter(
        redis_client,
        settings.state.state_key,
        SendLimitSettings(_env_file=None, broadcast_rate=36),
    )
    add_telegram_rules(session, settings.telegram)
    bot = Bot(settings.telegram.bot_token.get_secret_value(), session=session)
    jobs = [Broadcast(bot, recipients, limiter, job_id="soup", text=TEXT) for _ in range(2)]
    outputs = [io.StringIO(), io.StringIO()]
    statuses = await asyncio.gather(
        *(
            run_job(job, "soup", dry_run=False, out=out)
            for job, out in zip(jobs, outputs, strict=True)
        )
    )
    assert statuses == [0, 0]
    got = Counter(c.params["chat_id"] for c in telegram.calls if c.ok and c.params["text"] == TEXT)
    assert set(got) == set(users) - blocked - forbidden - {not_found}
    assert max(got.values()) == 1
    assert rates.refused == 0
    expected = "Broadcast soup: sent 51, skipped as blocked 8, failed 1\n"
    assert outputs[0].getvalue() == outputs[1].getvalue() == expected
    # The users who answered 403 are skipped by the next job without a call (a job that
    # needs no pace to show it).
    telegram.rates = None
    unpaced = SendLimiter(
        redis_client,
        settings.state.state_key,
        SendLimitSettings(_env_file=None, broadcast_rate=1000),
    )
    calls = len(telegram.calls)
    again = io.StringIO()
    next_job = Broadcast(bot, recipients, unpaced, job_id="soup-2", text=TEXT)
    assert await run_job(next_job, "soup-2", dry_run=False, out=again) == 0
    assert again.getvalue() == "Broadcast soup-2: sent 51, skipped as blocked 8, failed 1\n"
    assert not {c.params["chat_id"] for c in telegram.calls[calls:]} & (blocked | forbidden)


async def test_a_429_in_a_broadcast_is_waited_out_with_a_new_turn_and_sent_once(
    settings: Settings, redis_client: Redis
) -> None:
    recipients = Recipients(redis_client, settings.state.state_key)
    for user in range(5000, 5010):
        await recipients.add(user)
    telegram = FakeTelegram()
    telegram.fail("sendMessage", status=429, retry_after=1, match=lambda p: p["chat_id"] == 5003)
    session = FakeSession(telegram)
    add_telegram_rules(session, settings.telegram)
    bot = Bot(settings.telegram.bot_token.get_secret_value(), session=session)
    limiter = SendLimiter(redis_client, settings.state.state_key, SendLimitSettings(_env_file=None))
    job = Broadcast(bot, recipients, limiter, job_id="flood", text=TEXT)
    out = io.StringIO()
    assert await run_job(job, "flood", dry_run=False, out=out) == 0
    assert out.getvalue() == "Broadcast flood: sent 10, skipped as blocked 0, failed 0\n"
    attempts = [c for c in telegram.attempts("sendMessage") if c.params["chat_id"] == 5003]
    assert [c.ok for c in attempts] == [False, True]


async def test_sends_a_stalled_loop_made_late_take_new_turns_instead_of_bunching(
    settings: Settings, redis_client: Redis
) -> None:
    """A stall (a GC pause, a slow callback) wakes several overdue sends of both workers at
    once: they queue again behind the shared budget instead of going out together with the
    turns that follow, so no second gets more than the rate (and no 429)."""
    users = list(range(6000, 6080))
    recipients = Recipients(redis_client, settings.state.state_key)
    for user in users:
        await recipients.add(user)
    telegram = FakeTelegram()
    rates = telegram.enforce_rates(TelegramRates(per_second=40))
    session = FakeSession(telegram)
    add_telegram_rules(session, settings.telegram)
    bot = Bot(settings.telegram.bot_token.get_secret_value(), session=session)
    limiter = SendLimiter(
        redis_client, settings.state.state_key, SendLimitSettings(_env_file=None, broadcast_rate=36)
    )
    jobs = [Broadcast(bot, recipients, limiter, job_id="stall", text=TEXT) for _ in range(2)]
    # 0.5 s into the job the loop blocks for 0.3 s: ten turns of 36/s pass meanwhile. Sent
    # as they wake, each worker catching up at the full rate, they would make 46 in a second.
    asyncio.get_running_loop().call_later(0.5, time.sleep, 0.3)
    outputs = [io.StringIO(), io.StringIO()]
    statuses = await asyncio.gather(
        *(
            run_job(job, "stall", dry_run=False, out=out)
            for job, out in zip(jobs, outputs, strict=True)
        )
    )
    assert statuses == [0, 0]
    assert outputs[0].getvalue() == "Broadcast stall: sent 80, skipped as blocked 0, failed 0\n"
    got = Counter(c.params["chat_id"] for c in telegram.calls if c.ok)
    assert got == Counter(users)
    assert rates.refused == 0
