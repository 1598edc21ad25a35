"""botnodes on a Redis Cluster of three real redis-server processes started by the test.

Users must spread over the cluster while each user's state and lock keys share a slot,
or the lock scripts would fail with CROSSSLOT.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from .botnodes_support import Cart, Msg, make_nodes


def owner(cluster: RedisCluster, key: str) -> str:
    """The name (host:port) of the primary that holds `key`."""
    node = cluster.get_node_from_key(key)
    assert node is not None
    return node.name


@pytest.fixture
async def cluster(redis_cluster_url: str) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(redis_cluster_url)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


async def test_users_spread_over_the_cluster_and_locking_works(
    cluster: RedisCluster, state_key: str
) -> None:
    nodes = make_nodes(cluster, state_key)  # type: ignore[arg-type]
    for user_id in range(30):
        await nodes.route(Msg(user_id, "hi"))
        await nodes.route(Msg(user_id, "cart"))
    await asyncio.gather(*(nodes.route(Msg(7, f"item{i}")) for i in range(20)))

    node = await nodes.user(7).get_node()
    assert isinstance(node, Cart)
    assert node._data.items == [f"item{i}" for i in range(20)]

    slots = {await cluster.cluster_keyslot(f"{state_key}:{{{user_id}}}") for user_id in range(30)}
    owners = {owner(cluster, f"{state_key}:{{{user_id}}}") for user_id in range(30)}
    assert len(slots) > 10
    assert len(owners) == 3
    for user_id in (0, 7, 29):
        state_slot = await cluster.cluster_keyslot(f"{state_key}:{{{user_id}}}")
        assert state_slot == await cluster.cluster_keyslot(f"{state_key}:{{{user_id}}}:lock")
