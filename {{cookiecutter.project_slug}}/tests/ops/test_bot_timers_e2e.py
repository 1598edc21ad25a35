"""Timers end to end: real bot processes, real signals, one real Redis, short durations.

A reminder is scheduled in Redis, so it outlives the process that scheduled it; with several
processes each reminder is sent by exactly one of them.
"""

from __future__ import annotations

import asyncio
import signal

from {{ cookiecutter.project_slug }}.testing import FakeBotAPIServer

from .test_bot_e2e import StartBot, assert_clean_log, start_bot, wait_for_log

__all__ = ["start_bot"]  # the fixture, shared with test_bot_e2e

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
