"""A second bot process for cross-process tests: routes N cart items for one user, then exits.

Run as `python -m tests.botnodes.burst_worker REDIS_URL PREFIX USER_ID COUNT LABEL` from the
project root. It waits for a go signal (a Redis key) so both processes fire their bursts at the
same moment.
"""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import BlockingConnectionPool, Redis

from .botnodes_support import Msg, make_nodes


async def wait_for_key(redis: Redis, key: str) -> None:
    """Poll for the go key: the processes share nothing but Redis to signal each other."""
    while not await redis.exists(key):  # noqa: ASYNC110 - the event lives in another process
        await asyncio.sleep(0.005)


async def main(url: str, prefix: str, user_id: int, count: int, label: str) -> None:
    redis = Redis.from_pool(BlockingConnectionPool.from_url(url, max_connections=20))
    nodes = make_nodes(redis, prefix)
    await redis.incr(f"{prefix}:ready")
    await wait_for_key(redis, f"{prefix}:go")
    await asyncio.gather(*(nodes.route(Msg(user_id, f"{label}{i}")) for i in range(count)))
    await redis.aclose()


if __name__ == "__main__":
    url, prefix, user_id, count, label = sys.argv[1:6]
    asyncio.run(main(url, prefix, int(user_id), int(count), label))
