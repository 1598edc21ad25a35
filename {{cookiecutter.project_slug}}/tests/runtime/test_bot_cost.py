"""What an update costs in Redis, for the bot as `App` builds it (send limits, languages, the
registry of users): round trips counted at the client, commands counted by Redis itself.

Not a speed test: the counts are exact, whatever the machine. The Redis is the test's own
(`start_redis`), so `CONFIG RESETSTAT` and `INFO commandstats` see this bot and nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.crc import key_slot

from botnodes.telegram.send_limits import SendLimiter
from botnodes.telegram.settings import SendLimitSettings
from botnodes.testing import BotTestClient, TestUser

from {{ cookiecutter.project_slug }}.main import BOT

from ..conftest import RedisServer, make_settings

#: Redis commands per update of the flow below, `EVALSHA` and every command run inside the
#: scripts included, for a user the bot knows (their first update left out) and for the whole
#: walk of a new user (a first update also looks for what older versions kept, and registers
#: the user). Regression guards: raise them only with a reason the docs give. (9.29 and 9.88
#: since the timer schedule is set lazily: 10.0 and 10.5 before.)
COMMANDS_PER_UPDATE_AT_MOST = 9.3
COMMANDS_PER_UPDATE_OF_A_NEW_USERS_WALK_AT_MOST = 9.9

#: The benchmark's flow (bench/flows.py): first message, `Yes`, five items, `Finish`.
FLOW = ("hi", "Yes", "Pizza", "Soup", "Tea", "Cake", "Salad", "Finish")
BUTTONS = {"Yes", "Finish"}


class CountingConnection(Connection):
    """A real connection counting what it sends: one request (or pipeline) is one round trip."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


async def step(user: TestUser, text: str) -> None:
    replies = await (user.click(text) if text in BUTTONS else user.send(text))
    assert replies, f"no reply to {text!r}"


async def server_commands(redis: Redis) -> int:
    """Commands Redis ran since the last `CONFIG RESETSTAT`, this test's own calls left out."""
    return sum((await commands_by_name(redis)).values())


async def commands_by_name(redis: Redis) -> dict[str, int]:
    """The same, by command name (`ZADD`: calls)."""
    stats = await redis.info("commandstats")
    ours = {"cmdstat_info", "cmdstat_config|resetstat"}
    return {
        name.removeprefix("cmdstat_").upper(): int(row["calls"])
        for name, row in stats.items()
        if name not in ours
    }


async def test_a_lone_users_update_costs_two_round_trips_and_a_bounded_number_of_commands(
    start_redis: Callable[..., RedisServer], state_key: str
) -> None:
    server = start_redis()
    # The shared send budgets on, as by default, with a burst larger than a walk's 16
    # replies: the test counts what taking the turns costs, not Telegram's pace.
    never_waits = SendLimitSettings(_env_file=None, chat_rate=30, chat_burst=20)
    settings = dataclasses.replace(
        make_settings(state_key, url=SecretStr(server.url)), send_limits=never_waits
    )
    counted = Redis.from_pool(
        BlockingConnectionPool.from_url(server.url, connection_class=CountingConnection)
    )
    plain = Redis.from_url(server.url)
    try:
        async with BotTestClient.start(BOT, settings, redis=counted, send_limits=True) as client:
            warm = client.user(1)  # loads the scripts and opens the connection first
            for text in FLOW:
                await step(warm, text)
            alice = client.user(2, language_code="en")
            await plain.config_resetstat()
            per_update: list[int] = []
            for n, text in enumerate(FLOW):
                CountingConnection.sent = 0
                await step(alice, text)
                per_update.append(CountingConnection.sent)
                if n == 0:
                    first = await server_commands(plain)
            commands = await server_commands(plain)
            by_name = await commands_by_name(plain)
            # The turns were taken in Alice's chat budget, a key in her slot (a script may
            # touch it beside her state on a Redis Cluster).
            budget = SendLimiter(plain, state_key, never_waits).chat_key(2)
            assert key_slot(budget.encode()) == key_slot((state_key + ":{2}").encode())
            assert await plain.pttl(budget) > 0
        # Lock and read (the language and, the first time, the registry in the same batch),
        # then the commit (with the replies' turns and the timers): two, every update.
        assert per_update == [2] * len(FLOW)
        known = (commands - first) / (len(FLOW) - 1)
        assert known <= COMMANDS_PER_UPDATE_AT_MOST, known
        walk = commands / len(FLOW)
        assert walk <= COMMANDS_PER_UPDATE_OF_A_NEW_USERS_WALK_AT_MOST, walk
        # The cart's timers are armed by 6 of the 8 updates and dropped by `Finish`, but the
        # schedule is set twice: entering the cart (its expiry) and the first item (a reminder,
        # due earlier). Re-armed later, or dropped, they leave it to a look (timers.py).
        assert (by_name.get("ZADD", 0), by_name.get("ZREM", 0)) == (2, 0), by_name
    finally:
        await counted.aclose(close_connection_pool=True)
        await plain.aclose()
