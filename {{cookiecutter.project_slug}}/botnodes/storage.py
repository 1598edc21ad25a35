"""The Redis layout and the two scripts that make one routed event cost two round trips.

Every user has a string key `<prefix>:{<user_id>}` holding the node JSON and a lock key
`<prefix>:{<user_id>}:lock`. The braces are a Redis Cluster hash tag: a user's two keys share
a slot (so one script may touch both) while different users spread over the cluster.

botnodes 0.1.0 kept everybody in one hash named `<prefix>`; `read_legacy` and `forget_legacy`
let the manager move a user out of it the first time the user is seen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

    RedisClient = Redis | RedisCluster
else:  # keep redis-py's classes out of the import path at run time: only its API is used
    RedisClient = Any

# Take the lock if it is free and return the state in the same trip; otherwise return how
# long the lock has left, so the caller can sleep no longer than needed.
LOCK_AND_READ = """
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('GET', KEYS[1])}
end
return {0, redis.call('PTTL', KEYS[2])}
"""

# Write (or just keep) the state and release the lock, but only while the lock is still
# ours: a handler that outlived its lock must not overwrite what a newer holder wrote.
# ARGV: token, value ('' keeps the stored value), state TTL in ms ('0' = no expiry).
WRITE_AND_UNLOCK = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
if ARGV[2] ~= '' then
  if ARGV[3] ~= '0' then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  else
    redis.call('SET', KEYS[1], ARGV[2])
  end
elseif ARGV[3] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
redis.call('DEL', KEYS[2])
return 1
"""


def _as_text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class StateStore:
    """Reads and writes users' nodes in Redis; knows keys and scripts, nothing about nodes."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        *,
        state_ttl_ms: int | None,
        lock_ttl_ms: int,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._state_ttl = str(state_ttl_ms or 0)
        self._lock_ttl = str(lock_ttl_ms)
        self._lock_and_read = redis.register_script(LOCK_AND_READ)
        self._write_and_unlock = redis.register_script(WRITE_AND_UNLOCK)

    def state_key(self, user_id: int | str) -> str:
        return f"{self._prefix}:{{{user_id}}}"

    def lock_key(self, user_id: int | str) -> str:
        return f"{self._prefix}:{{{user_id}}}:lock"

    async def try_lock_and_read(
        self, user_id: int | str, token: str
    ) -> tuple[bool, str | None, int]:
        """Try to take the user's lock; return (taken, stored value, ms the lock has left)."""
        taken, value = await self._lock_and_read(
            keys=[self.state_key(user_id), self.lock_key(user_id)], args=[token, self._lock_ttl]
        )
        if taken:
            return True, _as_text(value), 0
        return False, None, int(value)

    async def write_and_unlock(self, user_id: int | str, token: str, value: str | None) -> bool:
        """Store `value` (None keeps the stored one) and release; False if the lock was lost."""
        done = await self._write_and_unlock(
            keys=[self.state_key(user_id), self.lock_key(user_id)],
            args=[token, value or "", self._state_ttl],
        )
        return bool(done)

    async def read(self, user_id: int | str) -> str | None:
        """Read the stored value without the lock (for inspection, not for transitions)."""
        return _as_text(await self._redis.get(self.state_key(user_id)))

    async def read_legacy(self, user_id: int | str) -> str | None:
        """Read the user's value from botnodes 0.1.0's single hash, if it is still there."""
        return _as_text(await self._redis.hget(self._prefix, str(user_id)))

    async def forget_legacy(self, user_id: int | str) -> None:
        """Drop the user from the 0.1.0 hash once their state lives under the new key."""
        await self._redis.hdel(self._prefix, str(user_id))
