"""Graceful shutdown of a real bot process (polling): bounded, honest about what it cut.

On SIGTERM the bot stops claiming timers, gives what runs SHUTDOWN_TIMEOUT, logs each reply of
a stored step it had to cut, and exits 0; a timer that fell due meanwhile is left in the
schedule for the next process (see docs/guarantees.md, "Graceful shutdown").
"""

from __future__ import annotations

import asyncio
import re
import signal
import time

from redis.asyncio import Redis

from botnodes.testing import FakeBotAPIServer

from .polling import StartBot, assert_clean_log, current_node
from .test_bot_timers_e2e import REMINDER, reminders

ALICE = 5101
BOB = 5102
SHUTDOWN_TIMEOUT = 3.0
SETTINGS = {
    "SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    "CART_REMINDER_AFTER": "2",
    "CART_EXPIRES_AFTER": "0",
    # A 429 asking for 20 s is waited out (not failed at once): only the shutdown cuts it.
    "TELEGRAM_MAX_RETRY_WAIT": "60",
    # Replies unpaced: this test is about the stop, not about Telegram's rates.
    "CHAT_RATE": "30",
    "CHAT_BURST": "20",
}


async def due_ms(redis: Redis, state_key: str, user_id: int) -> float | None:
    """The user's score in the timer schedule (their earliest due time, or a claim's end)."""
    for shard in range(8):
        key = f"{state_key}:timers:" + "{" + f"t{shard}" + "}"  # one Cluster slot each
        score = await redis.zscore(key, str(user_id))
        if score is not None:
            return float(score)
    return None


async def test_sigterm_cuts_a_stuck_reply_with_one_log_line_and_leaves_due_timers_to_the_next(
    bot_api: FakeBotAPIServer, start_bot: StartBot, redis_client: Redis, state_key: str
) -> None:
    bot = await start_bot(**SETTINGS)
    await bot_api.say(BOB, "hi", 1)
    await bot_api.say(BOB, "Yes", 2)
    await bot_api.say(BOB, "Pizza", 2)  # Bob's reminder is due 2 s from now
    bob_due = await due_ms(redis_client, state_key, BOB)
    assert bob_due is not None
    await bot_api.say(ALICE, "hi", 1)
    await bot_api.say(ALICE, "Yes", 2)
    cart = "What are you gonna order? Cart: Pizza"
    bot_api.telegram.fail(
        "sendMessage",
        status=429,
        retry_after=20,
        match=lambda params: str(params["chat_id"]) == str(ALICE) and params["text"] == cart,
    )
    assert await bot_api.say(ALICE, "Pizza", 1) == ["Added Pizza"]
    await bot_api.wait_for(
        lambda: any(c.params["text"] == cart and not c.ok for c in bot_api.calls("sendMessage")),
        15,
        "the cart reply refused with a 429",
    )
    assert time.time() * 1000 < bob_due, "Bob's timer fell due before the signal"
    started = time.monotonic()
    assert await bot.stop(signal.SIGTERM, timeout=SHUTDOWN_TIMEOUT + 5) == 0
    stopped = time.monotonic() - started
    assert stopped >= SHUTDOWN_TIMEOUT - 0.5, "the stuck reply was given SHUTDOWN_TIMEOUT"
    assert time.time() * 1000 > bob_due, "Bob's timer fell due while the bot was stopping"

    lost = [line for line in bot.log().splitlines() if "cut by shutdown" in line]
    assert len(lost) == 1, lost
    assert re.search(
        rf"\bERROR\b.*user {ALICE} lost 1 reply\(ies\) of a stored step, cut by shutdown: "
        r"the message 'hungry-ask'$",
        lost[0],
    ), lost[0]
    assert cart not in bot_api.sent_texts(ALICE)
    node = await current_node(redis_client, state_key, ALICE)
    assert node._data.order == ["Pizza"]  # the step was stored; only its reply was cut
    # Not claimed after the signal: still scheduled at its due time (a claim pushes it 30 s on).
    assert reminders(bot_api, BOB) == 0
    assert await due_ms(redis_client, state_key, BOB) == bob_due
    assert_clean_log(bot)

    successor = await start_bot(**SETTINGS)
    await bot_api.wait_for(lambda: reminders(bot_api, BOB) >= 1, 15, "Bob's reminder")
    await asyncio.sleep(1.0)  # a second firing would come within the next polls
    assert bot_api.sent_texts(BOB).count(REMINDER) == 1
    assert await successor.stop(signal.SIGTERM) == 0
    assert_clean_log(successor)
