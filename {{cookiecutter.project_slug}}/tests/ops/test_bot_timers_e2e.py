"""Timers end to end: real bot processes, real signals, one real Redis, short durations.

A reminder is scheduled in Redis, so it outlives the process that scheduled it; with several
processes each reminder is sent by exactly one of them, in polling and in webhook mode (a
webhook process runs the timers too: nothing else would send a reminder there).
"""

from __future__ import annotations

import asyncio
import signal

from botnodes.testing import FakeBotAPIServer

from .polling import StartBot, assert_clean_log, wait_for_log
from .replicas import Replica, StartReplica, update

ALICE = 5001
REMINDER = "Still hungry? Your cart: Pizza"
FAST_REMINDER = {"CART_REMINDER_AFTER": "1", "CART_EXPIRES_AFTER": "0"}


async def to_hungry_with_pizza(bot_api: FakeBotAPIServer, user_id: int) -> None:
    await bot_api.say(user_id, "hi", 1)
    await bot_api.say(user_id, "Yes", 2)
    assert (await bot_api.say(user_id, "Pizza", 2))[0] == "Added Pizza"


def reminders(bot_api: FakeBotAPIServer, user_id: int) -> int:
    return bot_api.sent_texts(user_id).count(REMINDER)


async def test_a_reminder_survives_a_sigkill_between_scheduling_and_firing(
    bot_api: FakeBotAPIServer, start_bot: StartBot
) -> None:
    bot = await start_bot(CART_REMINDER_AFTER="2", CART_EXPIRES_AFTER="0")
    await to_hungry_with_pizza(bot_api, ALICE)
    await bot.stop(signal.SIGKILL)
    assert reminders(bot_api, ALICE) == 0

    restarted = await start_bot(CART_REMINDER_AFTER="2", CART_EXPIRES_AFTER="0")
    await bot_api.wait_for(lambda: reminders(bot_api, ALICE) >= 1, 30, "the reminder")
    await asyncio.sleep(1.5)  # a second firing would come within the next polls
    assert reminders(bot_api, ALICE) == 1
    assert await restarted.stop(signal.SIGTERM) == 0
    assert_clean_log(restarted)


async def test_two_replicas_send_each_reminder_exactly_once(
    bot_api: FakeBotAPIServer, start_bot: StartBot
) -> None:
    replicas = [await start_bot(**FAST_REMINDER), await start_bot(**FAST_REMINDER)]
    for replica in replicas:
        await wait_for_log(replica, "Run polling")
    users = range(ALICE, ALICE + 8)
    bot_api.batch_size = 2  # both replicas take a share of the users' updates
    await asyncio.gather(*(to_hungry_with_pizza(bot_api, user_id) for user_id in users))
    await bot_api.wait_for(
        lambda: all(reminders(bot_api, user_id) for user_id in users), 30, "every reminder"
    )
    await asyncio.sleep(1.5)
    assert {user_id: reminders(bot_api, user_id) for user_id in users} == dict.fromkeys(users, 1)
    for replica in replicas:
        assert await replica.stop(signal.SIGTERM) == 0
        assert_clean_log(replica)


async def post_and_wait(
    bot_api: FakeBotAPIServer, replica: Replica, user_id: int, text: str, expect: int
) -> list[str]:
    """POST `text` of `user_id` to a webhook replica; the `expect` replies it brings."""
    before = len(bot_api.sent_texts(user_id))
    assert await replica.post(update(text, user_id)) == 200
    await bot_api.wait_for(
        lambda: len(bot_api.sent_texts(user_id)) >= before + expect, 15, repr(text)
    )
    return bot_api.sent_texts(user_id)[before:]


async def test_two_webhook_replicas_send_each_reminder_exactly_once(
    bot_api: FakeBotAPIServer, start_replica: StartReplica
) -> None:
    replicas = [await start_replica(**FAST_REMINDER), await start_replica(**FAST_REMINDER)]
    users = range(ALICE, ALICE + 6)

    async def to_cart(user_id: int) -> None:
        # Each user's updates reach both replicas, as a load balancer spreads them.
        for n, (text, expect) in enumerate((("hi", 1), ("Yes", 2), ("Pizza", 2))):
            replica = replicas[(user_id + n) % 2]
            replies = await post_and_wait(bot_api, replica, user_id, text, expect)
        assert replies[0] == "Added Pizza"

    await asyncio.gather(*(to_cart(user_id) for user_id in users))
    await bot_api.wait_for(
        lambda: all(reminders(bot_api, user_id) for user_id in users), 30, "every reminder"
    )
    await asyncio.sleep(1.5)  # a second firing would come within the next polls
    assert {user_id: reminders(bot_api, user_id) for user_id in users} == dict.fromkeys(users, 1)
    # The reminder carries the cart's buttons; both replicas' metrics count every firing once.
    reminder = next(
        message
        for message in bot_api.telegram.messages.values()
        if message.get("text") == REMINDER and message["chat"]["id"] == ALICE
    )
    buttons = [b["text"] for row in reminder["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons == ["Finish", "Cancel"]
    fired = 0.0
    for replica in replicas:
        status, metrics = await replica.get("/metrics")
        assert status == 200
        fired += sum(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("bot_timers_total{") and 'event="fired"' in line
        )
    assert fired == len(users)
    for replica in replicas:
        assert await replica.process.stop(signal.SIGTERM) == 0
        assert_clean_log(replica.process)
