"""Bytes per idle user in Redis for each of the bot's nodes (`MEMORY USAGE`).

The figures are printed (run with `-s`) and quoted in the README; the bounds below fail the
suite if a change makes an idle user noticeably bigger.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from botnodes import Node
from botnodes.codec import NodeCodec
from botnodes.storage import StateStore
from {{ cookiecutter.project_slug }}.main import DISCRIMINATOR_FIELD
from {{ cookiecutter.project_slug }}.nodes import Hold, Hungry, Start, nodes_dict

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
