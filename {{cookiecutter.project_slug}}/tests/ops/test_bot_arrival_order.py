"""A user's burst spread over two webhook replicas: nothing lost, in arrival order.

Each update is handled once and none is refused, though each waits in one replica for the
replies the other one paces, far longer than LOCK_WAIT_TIMEOUT; and they run in the order the
user sent them, not each replica's own first (the user's line in Redis, botnodes/line.py;
docs/guarantees.md, "One event per user at a time, in arrival order").
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from botnodes.testing import FakeBotAPIServer

from ..english import STATE_UNAVAILABLE_TEXT, USER_BUSY_TEXT
from .polling import ALICE, current_node
from .replicas import StartReplica, say, update

LOCK_WAIT_TIMEOUT = 1.0
#: Replies paced at 5 a second in the chat: the burst's 20 replies take about 4 s.
PACED = {"CHAT_RATE": "5", "CHAT_BURST": "1", "LOCK_WAIT_TIMEOUT": str(LOCK_WAIT_TIMEOUT)}
ITEMS = [f"dish{n}" for n in range(10)]


@dataclass
class Burst:
    statuses: list[int]
    #: The cart as stored, and every text the burst brought.
    cart: list[str]
    texts: list[str]
    seconds: float


async def burst_over_two_replicas(
    bot_api: FakeBotAPIServer, start_replica: StartReplica, redis: Redis, state_key: str
) -> Burst:
    """ITEMS posted alternately to two replicas, 5 ms apart, as a load balancer spreads them."""
    first, second = await asyncio.gather(start_replica(**PACED), start_replica(**PACED))
    await say(bot_api, first, "hi", 1)
    await say(bot_api, second, "Yes", 2)
    before = len(bot_api.sent_texts(ALICE))
    started = time.monotonic()
    posts = []
    for n, item in enumerate(ITEMS):
        posts.append(asyncio.create_task((first, second)[n % 2].post(update(item))))
        await asyncio.sleep(0.005)
    statuses = list(await asyncio.gather(*posts))  # each answered once handled
    seconds = time.monotonic() - started
    node = await current_node(redis, state_key, ALICE)
    for replica in (first, second):
        assert await replica.process.stop(signal.SIGTERM) == 0
    return Burst(statuses, node._data.order, bot_api.sent_texts(ALICE)[before:], seconds)


async def test_a_burst_over_two_replicas_is_served_each_update_once_none_refused(
    bot_api: FakeBotAPIServer, start_replica: StartReplica, redis_client: Redis, state_key: str
) -> None:
    burst = await burst_over_two_replicas(bot_api, start_replica, redis_client, state_key)
    assert burst.seconds > 2 * LOCK_WAIT_TIMEOUT  # the replies were paced: updates waited
    assert burst.statuses == [200] * len(ITEMS)
    assert sorted(burst.cart) == sorted(ITEMS)
    assert STATE_UNAVAILABLE_TEXT not in burst.texts
    assert USER_BUSY_TEXT not in burst.texts
    assert len(burst.texts) == 2 * len(ITEMS)  # "Added ..." and the cart, for each update
    assert sorted(t for t in burst.texts if t.startswith("Added ")) == sorted(
        f"Added {item}" for item in ITEMS
    )


async def test_a_burst_over_two_replicas_keeps_arrival_order(
    bot_api: FakeBotAPIServer, start_replica: StartReplica, redis_client: Redis, state_key: str
) -> None:
    burst = await burst_over_two_replicas(bot_api, start_replica, redis_client, state_key)
    assert burst.cart == ITEMS
