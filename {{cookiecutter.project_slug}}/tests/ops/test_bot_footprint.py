"""Bytes per idle user in Redis for each of the bot's nodes (`MEMORY USAGE`).

The figures are printed (run with `-s`) and quoted in the README; the bounds below fail the
suite if a change makes an idle user noticeably bigger.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from redis.asyncio import Redis

from botnodes import Node
from botnodes.codec import NodeCodec
from botnodes.storage import StateStore
from botnodes.telegram.app import DISCRIMINATOR_FIELD
from botnodes.testing import BotTestClient

from {{ cookiecutter.project_slug }}.nodes import Hold, Hungry, Start, nodes_dict

from ..conftest import RecordingFoodAPI

TELEGRAM_USER_ID = 5_123_456_789  # ten digits, like today's Telegram ids


@pytest.mark.parametrize(
    ("node", "limit"),
    [
        (Start("someone"), 120),
        (Hold(), 120),
        (Hungry(), 136),
        (Hungry(["Pizza Margherita", "Cola", "Tiramisu"]), 184),
    ],
    ids=["start", "hold", "hungry-empty", "hungry-3-items"],
)
async def test_an_idle_user_costs_little_memory(
    redis_client: Redis, node: Node[Any, Any, Any, Any], limit: int
) -> None:
    node.visit = 42  # a user some way into their conversation: "_n" is stored with the data
    codec: NodeCodec[Any, Any, Any] = NodeCodec(nodes_dict, DISCRIMINATOR_FIELD)
    store = StateStore(redis_client, "nodes_state", state_ttl_ms=None, lock_ttl_ms=1, legacy=False)
    key = store.state_key(TELEGRAM_USER_ID)
    await redis_client.set(key, codec.encode(node))
    try:
        used = await redis_client.memory_usage(key)
    finally:
        await redis_client.delete(key)
    print(f"{codec.key_of(node)}: {used} bytes ({codec.encode(node)})")
    assert used is not None
    assert used <= limit


async def walk_the_flow(client: BotTestClient, food_api: RecordingFoodAPI, user_ids: range) -> None:
    """Every user says hi, opens the cart, adds an item and orders: then they are idle."""

    async def walk(user_id: int) -> None:
        user = client.user(user_id)
        for text in ("hi", "Yes", "Tea", "Finish"):
            await user.send(text)

    await asyncio.gather(*(walk(user_id) for user_id in user_ids))
    # What the stand-ins record (replies, orders) is the test's memory, not the bot's.
    client.telegram.forget()
    food_api.orders.clear()
    food_api.keys.clear()


async def test_nothing_in_process_keeps_growing_once_users_are_idle(
    client: BotTestClient, food_api: RecordingFoodAPI
) -> None:
    await walk_the_flow(client, food_api, range(1, 401))  # fills every bounded cache once
    gc.collect()
    objects_before = len(gc.get_objects())
    await walk_the_flow(client, food_api, range(1001, 1401))  # 400 new users
    gc.collect()
    grown = len(gc.get_objects()) - objects_before
    nodes = client.nodes
    pipeline = nodes._store._pipeline
    assert pipeline is not None
    assert (nodes.busy_users, nodes.in_flight, len(nodes._locks._background)) == (0, 0, 0)
    assert (len(pipeline._queue), len(pipeline._flushes)) == (0, 0)
    assert grown < 40, f"{grown} objects more after 400 more users: something keeps them"
