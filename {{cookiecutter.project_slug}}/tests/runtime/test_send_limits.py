"""Telegram's send limits kept through Redis, proven against a stand-in that enforces them.

The stand-in answers 429 as Telegram's flood control does (`enforce_rates`); the bot's
replies go through the real limiter script on the real Redis, from one or two bot
"processes" (two test clients sharing Redis and the stand-in).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from botnodes.telegram.send_limits import SendLimiter
from botnodes.telegram.settings import ConfigError, SendLimitSettings, load_settings
from botnodes.testing import BotTestClient, FakeTelegram, TelegramRates

from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.settings import Settings

#: Faster rates than Telegram's, so a test sees many turns in a second or two. The stand-in
#: keeps the same rate with half a second's worth of messages more of burst (Telegram
#: tolerates a little more than it asks for): slack for a loaded machine's event loops,
#: which deliver late and then bunched.
RATE = 8.0
BURST = 3
FAST = SendLimitSettings(_env_file=None, chat_rate=RATE, chat_burst=BURST, group_rate=300)


def fast_rates() -> TelegramRates:
    return TelegramRates(per_second=1000, chat_per_second=RATE, chat_burst=BURST + int(RATE / 2))


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return dataclasses.replace(settings, send_limits=FAST)


@pytest.fixture
async def two_bots(
    limited: Settings, redis_client: Redis
) -> AsyncIterator[tuple[BotTestClient, BotTestClient, TelegramRates]]:
    """Two bot processes with the limiter on, one Redis, one Telegram that enforces rates."""
    telegram = FakeTelegram()
    rates = telegram.enforce_rates(fast_rates())
    async with (
        BotTestClient.start(
            BOT, limited, redis=redis_client, telegram=telegram, send_limits=True
        ) as a,
        BotTestClient.start(
            BOT, limited, redis=redis_client, telegram=telegram, send_limits=True
        ) as b,
    ):
        yield a, b, rates


async def walk(client: BotTestClient, user_id: int, *items: str) -> None:
    """First message, Yes, then dishes: two replies per dish (added, and the cart)."""
    user = client.user(user_id)
    await user.send("hi")
    await user.send("Yes")
    for item in items:
        await user.send(item)


async def test_without_the_limiter_the_stand_in_answers_a_flood_with_429(
    settings: Settings, redis_client: Redis
) -> None:
    # Telegram's own rates (a burst of 4 in a chat, then one a second): the walk's 5 replies
    # come within a second even on a loaded machine, so the 5th is refused, once (a 429's
    # retry_after is whole seconds: each one costs a second).
    telegram = FakeTelegram()
    rates = telegram.enforce_rates()
    async with BotTestClient.start(BOT, settings, redis=redis_client, telegram=telegram) as client:
        await walk(client, 2001, "Pizza")
    assert rates.refused > 0  # the stand-in bites: the next tests prove the limiter
    assert len(telegram.sent_texts(2001)) == 5  # waited out by RetryTelegram, none lost


async def test_a_burst_of_replies_in_one_chat_from_two_processes_gets_no_429(
    two_bots: tuple[BotTestClient, BotTestClient, TelegramRates],
) -> None:
    a, b, rates = two_bots
    started = time.monotonic()
    # The same user's messages reach both processes at once, as with two webhook replicas.
    await asyncio.gather(walk(a, 2002, "Pizza", "Sushi"), walk(b, 2002, "Soup", "Tea"))
    elapsed = time.monotonic() - started
    assert rates.refused == 0
    assert all(call.ok for call in a.telegram.attempts("sendMessage"))
    sent = len(a.telegram.sent_texts(2002))
    assert sent >= 12  # 2 x (hi, Yes, 2 dishes); what "hi" says depends on who came first
    # At RATE after the burst they can't all leave sooner: the budget was shared.
    assert elapsed >= (sent - BURST) / RATE - 0.1


async def test_replies_across_chats_from_two_processes_get_no_429(
    two_bots: tuple[BotTestClient, BotTestClient, TelegramRates],
) -> None:
    a, b, rates = two_bots
    users = range(2100, 2120)
    await asyncio.gather(
        *(walk(a, user, "Pizza") for user in users), *(walk(b, user, "Soup") for user in users)
    )
    assert rates.refused == 0
    assert all(call.ok for call in a.telegram.attempts("sendMessage"))
    assert all(len(a.telegram.sent_texts(user)) >= 8 for user in users)


async def test_one_call_reserves_a_burst_then_the_sustained_rate(
    redis_client: Redis, state_key: str
) -> None:
    settings = SendLimitSettings(_env_file=None, chat_rate=1, chat_burst=3, group_rate=20)
    limiter = SendLimiter(redis_client, state_key, settings)
    assert await limiter.reserve_chat(7, 5) == pytest.approx([0, 0, 0, 1, 2], abs=0.01)
    # The next turn comes after the five reserved ones, whichever process asks.
    other = SendLimiter(redis_client, state_key, settings)
    assert await other.reserve_chat(7) == pytest.approx([3], abs=0.05)
    # A group (negative id) gets 20 a minute: one every 3 seconds after the burst.
    assert await limiter.reserve_chat(-100, 4) == pytest.approx([0, 0, 0, 3], abs=0.01)
    # The bulk budget spaces broadcast messages evenly, no burst.
    assert await limiter.reserve_bulk(3) == pytest.approx([0, 0.04, 0.08], abs=0.01)
    # Kept only until its last turn has come: then a fresh budget is the same.
    assert 5000 < await redis_client.pttl(limiter.chat_key(7)) <= 6001


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("CHAT_BURST=0", "CHAT_BURST: Input should be greater than or equal to 1"),
        ("CHAT_RATE=fast", "CHAT_RATE: Input should be a valid number"),
        ("BROADCAST_RATE=0", "BROADCAST_RATE: Input should be greater than 0"),
        ("BROADCAST_LIMIT=0", "BROADCAST_LIMIT: Input should be greater than or equal to 1"),
        ("BROADCAST_LIMIT=1001", "BROADCAST_LIMIT: Input should be less than or equal to 1000"),
        ("GROUP_RATE=601", "GROUP_RATE: Input should be less than or equal to 600"),
    ],
)
def test_a_bad_send_limit_setting_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, error: str
) -> None:
    env = tmp_path / ".env"
    env.write_text(f"BOT_TOKEN=1:abc\n{line}\n", encoding="utf-8")
    for name in (
        "CHAT_BURST",
        "CHAT_RATE",
        "BROADCAST_RATE",
        "BROADCAST_LIMIT",
        "GROUP_RATE",
        "BOT_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as caught:
        load_settings(Settings, env)
    assert str(caught.value).startswith(error)
    assert "\n" not in str(caught.value)
