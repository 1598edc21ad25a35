"""One Redis client configuration for every variant, counting round trips at the client.

All three variants get the same client, configured the way a careful user configures it
(and the way the generated bot's `redis_connection.create_redis` does):

* `BlockingConnectionPool`: redis-py 8's default asyncio pool raises
  `MaxConnectionsError("Too many connections")` as soon as more than `max_connections`
  commands are in flight; the blocking pool makes the extra ones wait for a free connection.
* socket timeouts and a bounded retry with backoff, as in production.

`CountingConnection` counts what crosses the wire, because `INFO commandstats` alone can't
tell a round trip from a command run inside a Lua script: a script call shows up there as
one `evalsha` *plus* every `GET`/`SET` it ran.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


@dataclass(slots=True)
class WireCounter:
    """Round trips (packets of commands sent, each answered before the caller goes on)."""

    round_trips: int = 0
    commands: int = 0

    def reset(self) -> None:
        self.round_trips = 0
        self.commands = 0


#: One counter per process; each benchmark worker process runs a single variant.
WIRE = WireCounter()


class CountingConnection(Connection):
    """A plain TCP connection that counts every packet it sends (pipelines count once)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        WIRE.commands += 1  # pipelines pack each of their commands through here too
        return super().pack_command(*args)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        WIRE.round_trips += 1
        await super().send_packed_command(command, check_health)


def create_client(url: str, max_connections: int) -> Redis:
    """The Redis client every variant uses; connections are made lazily, up to the pool size."""
    pool = BlockingConnectionPool.from_url(
        url,
        connection_class=CountingConnection,
        max_connections=max_connections,
        timeout=5.0,
        socket_timeout=5.0,
        socket_connect_timeout=5.0,
        retry=Retry(
            ExponentialWithJitterBackoff(cap=1.0, base=0.1),
            3,
            supported_errors=(RedisConnectionError, RedisTimeoutError),
        ),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return Redis.from_pool(pool)


async def warm_pool(client: Redis, connections: int) -> None:
    """Open `connections` connections now, so connection set-up is not part of a measurement."""
    await asyncio.gather(*(client.ping() for _ in range(connections)))


#: Commands the harness itself sends; they are not part of any variant's cost.
HARNESS_COMMANDS = frozenset(
    {
        "info",
        "config|resetstat",
        "config",
        "ping",
        "client|setinfo",
        "hello",
        "script|load",
        "select",
        "flushdb",
        "scan",
        "dbsize",
    }
)


async def reset_commandstats(client: Redis) -> None:
    """Zero the server's per-command counters (CONFIG RESETSTAT)."""
    await client.config_resetstat()


async def read_commandstats(client: Redis) -> dict[str, int]:
    """Calls per command since the last reset, without the harness's own commands."""
    info = await client.info("commandstats")
    stats: dict[str, int] = {}
    for name, value in info.items():
        command = name.removeprefix("cmdstat_")
        if command in HARNESS_COMMANDS:
            continue
        stats[command] = int(value["calls"])
    return stats
