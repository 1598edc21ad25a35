"""botnodes on a Redis Cluster of three real redis-server processes started by the test.

Users must spread over the cluster while each user's state and lock keys share a slot,
or the lock scripts would fail with CROSSSLOT.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio.cluster import RedisCluster

from .botnodes_support import Cart, Msg, make_nodes
from .conftest import RedisServer


@pytest.fixture
async def cluster(start_redis: Callable[..., RedisServer]) -> AsyncIterator[RedisCluster]:
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        pytest.fail("redis-cli is not on PATH: install redis-tools (apt-get)", pytrace=False)
    servers = [
        start_redis("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        for _ in range(3)
    ]
    addresses = [f"127.0.0.1:{server.port}" for server in servers]
    subprocess.run(
        [redis_cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    deadline = time.monotonic() + 30
    while True:
        info = subprocess.run(
            [redis_cli, "-p", str(servers[0].port), "cluster", "info"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if "cluster_state:ok" in info:
            break
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.1)
    client = RedisCluster(host="127.0.0.1", port=servers[0].port)
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

    slots = {
        await cluster.cluster_keyslot(f"{state_key}:{{{user_id}}}") for user_id in range(30)
    }
    owners = {cluster.get_node_from_key(f"{state_key}:{{{user_id}}}").name for user_id in range(30)}
    assert len(slots) > 10
    assert len(owners) == 3
    for user_id in (0, 7, 29):
        state_slot = await cluster.cluster_keyslot(f"{state_key}:{{{user_id}}}")
        assert state_slot == await cluster.cluster_keyslot(f"{state_key}:{{{user_id}}}:lock")
