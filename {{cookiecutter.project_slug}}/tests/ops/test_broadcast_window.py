"""Two real `broadcast` processes sharing BROADCAST_LIMIT through Redis, against the Bot API
stand-in over HTTP with a jittery latency: no second ever gets more than the limit as the
stand-in counts messages (when they arrive), so no 429, and every user gets it once.
"""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from botnodes.telegram.recipients import Recipients
from botnodes.testing import FakeBotAPIServer, TelegramRates
from botnodes.testing.fake_bot_api import Latency

from ..conftest import E2E_TOKEN
from .bot_process import BotProcess
from .test_broadcast import PACKAGE, TEXT, delivered, summary

USERS = range(710_001, 710_601)
#: The stand-in's bulk limit and the bot's BROADCAST_LIMIT (a few Telegrams, so it is quick).
LIMIT = 100


async def test_two_processes_share_the_limit_over_a_jittery_network_without_a_429(
    bot_api: FakeBotAPIServer, redis_client: Redis, redis_url: str, state_key: str, tmp_path: Path
) -> None:
    """The bulk rate is twice the limit, so the window alone keeps the pace: before it, the
    stand-in refused a large share of the messages."""
    recipients = Recipients(redis_client, state_key)
    for user in USERS:
        await recipients.add(user)
    rates = bot_api.telegram.enforce_rates(TelegramRates(per_second=LIMIT))
    bot_api.telegram.latency = Latency(0.05, jitter=1.0)  # 0 to 100 ms each way
    env = {
        "BOT_TOKEN": E2E_TOKEN,
        "TELEGRAM_API_URL": bot_api.url,
        "REDIS_URL": redis_url,
        "STATE_KEY": state_key,
        "BROADCAST_RATE": str(2 * LIMIT),
        "BROADCAST_LIMIT": str(LIMIT),
    }
    args = ("broadcast", "--id", "window", "--text", TEXT)
    processes = [BotProcess(PACKAGE, env, tmp_path / f"run{n}", *args) for n in range(2)]
    try:
        for process in processes:
            await process.start()
        for process in processes:
            assert await process.wait(120) == 0, process.log()
    finally:
        for process in processes:
            await process.kill()
    assert rates.refused == 0, "\n".join(p.log() for p in processes)
    assert delivered(bot_api) == dict.fromkeys(USERS, 1)
    assert summary(processes[0]) == summary(processes[1]) == (len(USERS), 0, 0, 0)
