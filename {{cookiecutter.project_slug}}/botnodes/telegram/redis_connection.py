"""The one place the Redis client is built, so every timeout and retry is configured here.

Outages are handled with redis-py's own machinery (socket timeouts, `Retry` with exponential
backoff, health checks), not hand-written loops: a failed command surfaces as
`botnodes.StateUnavailableError`, and the next event simply tries again.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, TimeoutError

from .settings import RedisSettings

RedisClient = Redis | RedisCluster

# Backoff between retries of one command; with the default 3 retries a dead server is
# reported after about a second instead of stalling the user's update.
_BACKOFF_BASE = 0.1
_BACKOFF_CAP = 1.0


def _retry(settings: RedisSettings) -> Retry:
    return Retry(
        ExponentialWithJitterBackoff(cap=_BACKOFF_CAP, base=_BACKOFF_BASE),
        settings.retries,
        supported_errors=(ConnectionError, TimeoutError),
    )


def create_redis(settings: RedisSettings) -> RedisClient:
    """Build the client described by the settings; it connects lazily on first use."""
    url = settings.url.get_secret_value()
    if settings.cluster:
        # The cluster client has no blocking pool: `max_connections` is per node and raises
        # MaxConnectionsError when exceeded, so keep MAX_CONCURRENT_UPDATES at or below it.
        return RedisCluster.from_url(
            url,
            max_connections=settings.max_connections,
            socket_timeout=settings.socket_timeout,
            socket_connect_timeout=settings.socket_timeout,
            retry=_retry(settings),
            health_check_interval=settings.health_check_interval,
        )
    # redis-py's default asyncio pool raises "Too many connections" when exhausted; the
    # blocking pool makes a burst of updates wait up to `pool_timeout` for a free connection.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.socket_timeout,
        retry=_retry(settings),
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=settings.health_check_interval,
    )
    return Redis.from_pool(pool)
