"""`python -m <bot> broadcast` as two real processes against a Bot API that enforces Telegram's
rates: no 429, every user once, blocked users skipped, and a SIGKILL survived by resuming.
"""

from __future__ import annotations

import re
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from botnodes.telegram.broadcast import IN_FLIGHT
from botnodes.telegram.broadcast_job import CLAIMED
from botnodes.telegram.recipients import SHARDS, Recipients
from botnodes.testing import FakeBotAPIServer, TelegramRates

from ..conftest import E2E_TOKEN
from .bot_process import BotProcess

PACKAGE = "{{ cookiecutter.project_slug }}"
TEXT = "Our new menu is out: try the soup!"
USERS = list(range(700_001, 701_001))
#: Blocked before the job (the registry says so): never messaged.
BLOCKED = set(USERS[::50])
#: Blocked since: Telegram answers 403, and the user is marked.
FORBIDDEN = set(USERS[1::97])
#: A chat Telegram does not know: 400, failed, not retried.
NOT_FOUND = USERS[2]
SUMMARY = re.compile(
    r"Broadcast (\S+): sent (\d+), skipped as blocked (\d+), failed (\d+)"
    r"(?:, unconfirmed (\d+))?"
)

Run = Callable[[str], BotProcess]


@pytest.fixture
async def recipients(redis_client: Redis, state_key: str) -> Recipients:
    registry = Recipients(redis_client, state_key)
    for user in USERS:
        await registry.add(user)
    for user in BLOCKED:
        await registry.block(user)
    return registry


@pytest.fixture
async def telegram(bot_api: FakeBotAPIServer) -> TelegramRates:
    """Telegram's rates with the global one raised (300/s) so 1,000 users take seconds."""
    rates = bot_api.telegram.enforce_rates(TelegramRates(per_second=300))
    bot_api.telegram.fail(
        "sendMessage", status=403, times=10**6, match=lambda p: int(p["chat_id"]) in FORBIDDEN
    )
    bot_api.telegram.fail(
        "sendMessage", status=400, times=10**6, match=lambda p: int(p["chat_id"]) == NOT_FOUND
    )
    return rates


@pytest.fixture
async def run(
    bot_api: FakeBotAPIServer, tmp_path: Path, redis_url: str, state_key: str
) -> AsyncIterator[Callable[..., BotProcess]]:
    started: list[BotProcess] = []

    def make(job: str, *extra: str, **settings: str) -> BotProcess:
        env = {
            "BOT_TOKEN": E2E_TOKEN,
            "TELEGRAM_API_URL": bot_api.url,
            "REDIS_URL": redis_url,
            "STATE_KEY": state_key,
            "BROADCAST_RATE": "250",
            **settings,
        }
        args = ("broadcast", "--id", job, "--text", TEXT, *extra)
        process = BotProcess(PACKAGE, env, tmp_path / f"run{len(started)}", *args)
        started.append(process)
        return process

    yield make
    for process in started:
        await process.kill()


def delivered(bot_api: FakeBotAPIServer) -> Counter[int]:
    return Counter(
        int(call.params["chat_id"])
        for call in bot_api.calls("sendMessage")
        if call.ok and call.params.get("text") == TEXT
    )


async def claimed_unconfirmed(redis: Redis, recipients: Recipients, job: str) -> set[int]:
    """Users the job's record still holds as claimed: a killed process's sends in flight."""
    left: set[int] = set()
    for shard in range(SHARDS):
        record = await redis.hgetall(recipients.job_key(shard, job))
        left |= {int(user) for user, mark in record.items() if mark == CLAIMED.encode()}
    return left


def summary(process: BotProcess) -> tuple[int, int, int, int]:
    found = SUMMARY.search(process.log())
    assert found is not None, process.log()
    return int(found[2]), int(found[3]), int(found[4]), int(found[5] or 0)


async def test_two_processes_share_a_job_survive_a_kill_and_reach_everyone_once(
    bot_api: FakeBotAPIServer,
    telegram: TelegramRates,
    recipients: Recipients,
    redis_client: Redis,
    run: Callable[..., BotProcess],
) -> None:
    first, second = run("menu-1"), run("menu-1")
    await first.start()
    await second.start()
    # Counted in O(1): the predicate runs in the stand-in's loop on every call it answers.
    await bot_api.wait_for(lambda: len(bot_api.telegram.messages) >= 300, 120, "300 messages")
    assert await second.stop(signal.SIGKILL) == -signal.SIGKILL  # mid-job, no goodbye
    assert await first.wait(120) == 0, first.log()
    resumed = run("menu-1")
    await resumed.start()
    assert await resumed.wait(120) == 0, resumed.log()

    got = delivered(bot_api)
    assert telegram.refused == 0
    assert max(got.values()) == 1  # nobody got the job twice
    assert not BLOCKED & set(got)
    assert not any(int(c.params["chat_id"]) in BLOCKED for c in bot_api.calls("sendMessage"))
    sent, blocked, failed, unconfirmed = summary(resumed)
    assert sent + blocked + failed + unconfirmed == len(USERS)
    # The only users left out: those the killed process had claimed and not confirmed.
    left_claimed = await claimed_unconfirmed(redis_client, recipients, "menu-1")
    # The one chat Telegram does not know fails, unless the killed process had claimed it.
    not_found_claimed = NOT_FOUND in left_claimed
    assert failed == (0 if not_found_claimed else 1)
    # Unconfirmed: claimed by the killed process, which may or may not have sent them.
    assert unconfirmed <= IN_FLIGHT
    assert sent <= len(got) <= sent + unconfirmed
    skipped = len(BLOCKED) + len(FORBIDDEN)
    assert blocked <= skipped <= blocked + unconfirmed
    assert len(left_claimed) == unconfirmed
    missing = set(USERS) - set(got) - BLOCKED - FORBIDDEN - {NOT_FOUND}
    assert missing <= left_claimed
    # 403 marked the users: the next job skips them without asking Telegram. A user the
    # killed process was sending to when it died may have had the 403 and not the mark.
    assert FORBIDDEN - left_claimed
    for user in FORBIDDEN - left_claimed:
        blocked_set = recipients.blocked_key(recipients.shard_of(user))
        assert await redis_client.sismember(blocked_set, str(user))
    not_found_logs = [
        line
        for line in first.log().splitlines() + second.log().splitlines()
        if str(NOT_FOUND) in line and "chat not found" in line
    ]
    if not not_found_claimed:  # else the killed process may have died before or after asking
        [not_found_log] = not_found_logs
        assert "failed" in not_found_log


async def test_a_finished_job_sends_nothing_again_and_a_dry_run_counts(
    bot_api: FakeBotAPIServer,
    telegram: TelegramRates,
    recipients: Recipients,
    run: Callable[..., BotProcess],
) -> None:
    dry = run("menu-2", "--dry-run")
    await dry.start()
    assert await dry.wait(120) == 0, dry.log()
    assert f"would send to {len(USERS) - len(BLOCKED)} users" in dry.log()
    assert not delivered(bot_api)
    done = run("menu-2")
    await done.start()
    assert await done.wait(120) == 0, done.log()
    once = delivered(bot_api)
    again = run("menu-2")
    await again.start()
    assert await again.wait(120) == 0, again.log()
    assert delivered(bot_api) == once
    assert summary(again) == summary(done)
    assert telegram.refused == 0
