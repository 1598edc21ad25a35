"""The Redis layout and the two scripts that make one routed event cost two round trips.

Every user has a string key `<prefix>:{<user_id>}` holding the node JSON and a lock key
`<prefix>:{<user_id>}:lock`. The braces are a Redis Cluster hash tag: a user's two keys share
a slot (so one script may touch both) while different users spread over the cluster.

botnodes 0.1.0 kept everybody in one hash named `<prefix>`; `read_legacy` and `forget_legacy`
let the manager move a user out of it the first time the user is seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript

from .pipelining import ScriptPipeline

RedisClient = Redis | RedisCluster

# Take the lock if it is free and return the state in the same trip; otherwise return how
# long the lock has left, so the caller sleeps no longer than needed. With a third key (the
# 0.1.0 hash) a user missing from the new layout is looked up there in the same trip.
# ARGV: token, lock TTL in ms, user id (the 0.1.0 hash field). Returns {taken, value, legacy}.
# Holding the lock already counts as taking it, so a call retried after a lost reply succeeds.
LOCK_AND_READ = """
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])
    or redis.call('GET', KEYS[2]) == ARGV[1] then
  local value = redis.call('GET', KEYS[1])
  if value or not KEYS[3] then
    return {1, value, 0}
  end
  return {1, redis.call('HGET', KEYS[3], ARGV[3]), 1}
end
return {0, redis.call('PTTL', KEYS[2]), 0}
"""

# Write (or just keep) the state and release the lock, but only while the lock is still
# ours: a handler that outlived its lock must not overwrite what a newer holder wrote.
# With a third key, the user's field in the 0.1.0 hash is dropped in the same trip.
# A retry after a lost reply finds the lock gone and its value stored, and reports success.
# ARGV: token, value ('' keeps the stored value), state TTL in ms ('0' = none), user id.
WRITE_AND_UNLOCK = """
local holder = redis.call('GET', KEYS[2])
if holder ~= ARGV[1] then
  if not holder and ARGV[2] ~= '' and redis.call('GET', KEYS[1]) == ARGV[2] then
    return 1
  end
  return 0
end
if ARGV[2] ~= '' then
  if ARGV[3] ~= '0' then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  else
    redis.call('SET', KEYS[1], ARGV[2])
  end
  if KEYS[3] then
    redis.call('HDEL', KEYS[3], ARGV[4])
  end
elseif ARGV[3] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
redis.call('DEL', KEYS[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class Locked:
    """The outcome of one try to take a user's lock."""

    taken: bool
    value: str | None = None
    #: The value came from botnodes 0.1.0's hash and should be moved out of it.
    from_legacy: bool = False
    #: When not taken: how many milliseconds the holder's lock has left.
    lock_left_ms: int = 0


def _as_text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class StateStore:
    """Reads and writes users' nodes in Redis; knows keys and scripts, nothing about nodes.

    On a single Redis the 0.1.0 hash is read and cleaned inside the two scripts, so moving
    users costs no extra trip. On a cluster the hash lives in another slot than the user's
    keys, so a user missing from the new layout costs one HGET (and one HDEL if found).
    """

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        *,
        state_ttl_ms: int | None,
        lock_ttl_ms: int,
        legacy: bool,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._state_ttl = str(state_ttl_ms or 0)
        self._lock_ttl = str(lock_ttl_ms)
        self._legacy = legacy
        self._legacy_in_scripts = legacy and not isinstance(redis, RedisCluster)
        self._lock_and_read = redis.register_script(LOCK_AND_READ)
        self._write_and_unlock = redis.register_script(WRITE_AND_UNLOCK)
        # A cluster pipeline splits by node and slot on its own; batching is for one server.
        self._pipeline = None if isinstance(redis, RedisCluster) else ScriptPipeline(redis)

    def state_key(self, user_id: int | str) -> str:
        return f"{self._prefix}:{{{user_id}}}"

    def lock_key(self, user_id: int | str) -> str:
        return f"{self._prefix}:{{{user_id}}}:lock"

    def _keys(self, user_id: int | str) -> list[str]:
        keys = [self.state_key(user_id), self.lock_key(user_id)]
        if self._legacy_in_scripts:
            keys.append(self._prefix)
        return keys

    async def try_lock_and_read(self, user_id: int | str, token: str) -> Locked:
        """Try to take the user's lock and read their value (from 0.1.0's hash if need be)."""
        taken, value, from_legacy = await self._run(
            self._lock_and_read, self._keys(user_id), [token, self._lock_ttl, str(user_id)]
        )
        if not taken:
            return Locked(taken=False, lock_left_ms=int(value))
        text = _as_text(value)
        if text is None and self._legacy and not self._legacy_in_scripts:
            text = await self.read_legacy(user_id)
            return Locked(taken=True, value=text, from_legacy=text is not None)
        return Locked(taken=True, value=text, from_legacy=bool(from_legacy) and text is not None)

    async def write_and_unlock(
        self, user_id: int | str, token: str, value: str | None, *, forget_legacy: bool = False
    ) -> bool:
        """Store `value` (None keeps the stored one) and release; False if the lock was lost.

        With `forget_legacy` the user's entry in the 0.1.0 hash is dropped once stored.
        """
        keys = self._keys(user_id) if forget_legacy else self._keys(user_id)[:2]
        done = await self._run(
            self._write_and_unlock, keys, [token, value or "", self._state_ttl, str(user_id)]
        )
        if done and value and forget_legacy and not self._legacy_in_scripts:
            await self._redis.hdel(self._prefix, str(user_id))
        return bool(done)

    async def _run(self, script: AsyncScript, keys: list[str], args: list[str]) -> Any:
        if self._pipeline is not None:
            return await self._pipeline(script, keys, args)
        return await script(keys=keys, args=args)

    async def read(self, user_id: int | str) -> str | None:
        """Read the stored value without the lock (for inspection, not for transitions)."""
        value = _as_text(await self._redis.get(self.state_key(user_id)))
        if value is None and self._legacy:
            value = await self.read_legacy(user_id)
        return value

    async def read_legacy(self, user_id: int | str) -> str | None:
        """Read the user's value from botnodes 0.1.0's single hash, if it is still there."""
        return _as_text(await self._redis.hget(self._prefix, str(user_id)))
