"""The Redis layout, and the calls that make one routed event cost two round trips.

Every user has a string key `<prefix>:{<user_id>}` holding the node JSON, a lock key
`<prefix>:{<user_id>}:lock`, and while they are active a record `<prefix>:{<user_id>}:seen`
of the events already handled (so a re-delivered update runs once; see handled.py) and,
while events of theirs wait in other processes, a line `<prefix>:{<user_id>}:line`
(line.py). The braces are a Redis Cluster hash tag: a user's keys share a slot (so one
script may touch them all) while different users spread over the cluster.

Anything at all may sit at those keys: a value written by hand, by a bug, by a restore of an
old dump. The scripts never fail on it. A key of another type at the state key reads as "no
usable state" (and is overwritten by the next write); a lock that no botnodes process can have
written (another type, a value that is not a token, no TTL, a TTL longer than any holder sets)
is recovered at once instead of blocking the user forever. Each such repair is reported back
so the manager can log it.

botnodes 0.1.0 kept everybody in one hash named `<prefix>`; the lock script reads a user's
field from it (if that key is a hash at all) and the write script drops the field once the
user is stored in the new layout.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript

from .budget import Reservation, ServerClock
from .handled import MARK_HANDLED, as_handled_id
from .line import as_order, as_orders
from .pipelining import ScriptPipeline
from .storage_scripts import EXTEND_LOCK, LOCK_AND_READ, WRITE_AND_UNLOCK

RedisClient = Redis | RedisCluster

#: The longest TTL Redis takes, in seconds: it refuses an expiry whose milliseconds, added to
#: the current time, overflow a 64-bit integer (2**63 ms); this leaves room for "now".
MAX_TTL_SECONDS = 9e15


#: What `write_and_unlock` reports.
STORED = 1
STORED_WITHOUT_LOCK = 2
REFUSED = 0

_FROM_STATE_KEY = 1
_FROM_LEGACY = 2

_TAKEN = 1
_DUPLICATE = 2


@dataclass(frozen=True, slots=True)
class NoteRead:
    """A read of a user's note (storage_scripts.NOTE_FUNCTION) riding in the lock script.

    A rider (the runtime's languages) hands one over for the user whose lock is being taken,
    so the read costs a key of the lock script's MGET instead of a script of its own.
    """

    #: The note's key: it carries the user's hash tag, so it is in their Redis Cluster slot.
    key: str
    #: The value reported for the user now ('' = none).
    reported: str
    #: Told the note's value, or None when the try did not read it (the lock was held by
    #: another, or the call failed): then the rider reads it itself, or rides the next try.
    done: Callable[[str | None], None]


#: Gives the read that rides in the lock script of a user, or None (nothing to read).
LockRider = Callable[[Any], NoteRead | None]


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of a write: STORED, STORED_WITHOUT_LOCK or REFUSED, and reserved turns."""

    status: int
    #: The wait in ms of each turn the write reserved (see budget.py), in order.
    waits_ms: list[int]

    def __bool__(self) -> bool:
        return self.status != REFUSED


@dataclass(frozen=True, slots=True)
class Locked:
    """The outcome of one try to take a user's lock."""

    taken: bool
    #: The raw stored bytes (undecoded: they may be anything), or None if nothing was there.
    value: bytes | None = None
    #: The value came from botnodes 0.1.0's hash and should be moved out of it.
    from_legacy: bool = False
    #: When not taken: how many milliseconds the holder's lock has left.
    lock_left_ms: int = 0
    #: What the script had to repair at the user's keys ('' if nothing), for the log.
    repairs: str = ""
    #: The event was handled before (a re-delivery): the lock was not kept, nothing was read.
    duplicate: bool = False
    #: The Redis server's clock in microseconds when no readable value was stored, else 0.
    now_us: int = 0
    #: When not taken: the holder has stored its step and is sending its replies.
    holder_replying: bool = False

    @property
    def read_digest(self) -> str:
        """SHA-1 of what was read from the state key, '' if nothing was: the write's fence."""
        if self.value is None or self.from_legacy:
            return ""
        return hashlib.sha1(self.value, usedforsecurity=False).hexdigest()


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _as_str(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


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
        dedupe_window_ms: int = 86_400_000,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._state_ttl = str(state_ttl_ms or 0)
        self._lock_ttl = str(lock_ttl_ms)
        self._dedupe_window = str(dedupe_window_ms)
        self._legacy = legacy
        self._legacy_in_scripts = legacy and not isinstance(redis, RedisCluster)
        self._lock_and_read = redis.register_script(LOCK_AND_READ)
        self._write_and_unlock = redis.register_script(WRITE_AND_UNLOCK)
        self._extend_lock = redis.register_script(EXTEND_LOCK)
        self._mark_handled = redis.register_script(MARK_HANDLED)
        # A cluster pipeline splits by node and slot on its own; batching is for one server.
        self._pipeline = None if isinstance(redis, RedisCluster) else ScriptPipeline(redis)
        self._rider: LockRider | None = None
        self._clock = ServerClock()

    def read_with_lock(self, rider: LockRider) -> None:
        """Have `rider`'s note of a user read (and kept) by the script that takes their lock."""
        self._rider = rider

    @property
    def schedules_in_commit(self) -> bool:
        """A single Redis: the commit script may also set the user's timer schedule shard."""
        return self._pipeline is not None

    def state_key(self, user_id: int | str) -> str:
        return f"{self._prefix}:{{{user_id}}}"

    def lock_key(self, user_id: int | str) -> str:
        return f"{self._prefix}:{{{user_id}}}:lock"

    def seen_key(self, user_id: int | str) -> str:
        return f"{self._prefix}:{{{user_id}}}:seen"

    def line_key(self, user_id: int | str) -> str:
        return f"{self._prefix}:{{{user_id}}}:line"

    def _keys(self, user_id: int | str) -> list[str]:
        keys = [self.state_key(user_id), self.lock_key(user_id), self.seen_key(user_id)]
        if self._legacy_in_scripts:
            keys.append(self._prefix)
        return keys

    async def try_lock_and_read(
        self,
        user_id: int | str,
        token: str,
        *,
        event_id: str = "",
        order: int | None = None,
        followers: list[int] | None = None,
        on_orphaned: Callable[[], None] | None = None,
    ) -> Locked:
        """Try to take the user's lock and read their value (from 0.1.0's hash if need be).

        An `event_id` already recorded as handled comes back as `duplicate` (lock not kept).
        An event with an `order` (its place in the user's order) that finds the lock held, or
        an earlier event waiting, waits in the user's line (line.py) and is not `taken`, with
        its `followers` (the orders of the events queued behind it in this process).
        If the caller is cancelled while the script runs and the script took the lock anyway,
        `on_orphaned` is called, so the lock can be released instead of blocking the user.
        """

        def orphaned(result: Any) -> None:
            if result[0] == _TAKEN and on_orphaned is not None:
                on_orphaned()

        note = self._rider(user_id) if self._rider is not None else None
        keys = self._keys(user_id)
        keys.insert(3, note.key if note is not None else keys[0])
        keys.insert(4, self.line_key(user_id))
        args = [token, self._lock_ttl, str(user_id), as_handled_id(event_id)]
        args += [note.reported, "1"] if note is not None else ["", ""]
        args += [as_order(order), as_orders(followers or [])]
        try:
            result = await self._run(self._lock_and_read, keys, args, orphaned=orphaned)
        except BaseException:
            if note is not None:
                note.done(None)
            raise
        status, value, source, repairs, now_us, replying = result[:6]
        if note is not None:
            noted = result[6] if len(result) > 6 and status in (_TAKEN, _DUPLICATE) else None
            note.done(None if noted is None else _as_str(noted))
        repairs = _as_str(repairs)
        if status == _DUPLICATE:
            return Locked(taken=False, duplicate=True, repairs=repairs)
        if status != _TAKEN:
            return Locked(taken=False, lock_left_ms=int(value), holder_replying=bool(replying))
        raw = _as_bytes(value)
        now_us = int(now_us)
        if raw is None and source == 0 and self._legacy and not self._legacy_in_scripts:
            raw = await self.read_legacy(user_id)
            return Locked(
                taken=True, value=raw, from_legacy=raw is not None, repairs=repairs, now_us=now_us
            )
        return Locked(
            taken=True,
            value=raw,
            from_legacy=source == _FROM_LEGACY,
            repairs=repairs,
            now_us=now_us,
        )

    async def write_and_unlock(
        self,
        user_id: int | str,
        token: str,
        value: str | None,
        *,
        read_digest: str,
        forget_legacy: bool = False,
        event_id: str = "",
        keep_lock_ms: int = 0,
        reserve: Reservation | None = None,
        schedule: tuple[str, str, str] | None = None,
        followers: list[int] | None = None,
    ) -> Written:
        """Store `value` (None keeps the stored one) and release; `.status` is STORED & co.

        `read_digest` is `Locked.read_digest` of the read this write follows: the value is
        stored only if nobody changed it since. With `forget_legacy` the user's entry in the
        0.1.0 hash is dropped once stored. A stored value records `event_id` as handled;
        `keep_lock_ms` keeps the lock (marked as sending replies) instead of releasing it.
        A stored value also takes `reserve`'s turns (see budget.py), in the same script:
        `.waits_ms` holds each one's wait. `schedule` (shard key, member, earliest due ms or
        '') sets the user's place in the timer schedule with a stored value, on a single
        Redis only (`schedules_in_commit`). A released lock goes to the earliest event
        waiting in the user's line or among `followers` (line.py's `hand_on`).
        """
        keys = self._keys(user_id)
        reserving = reserve is not None and bool(value) and reserve.count > 0
        keys.insert(3, reserve.key if reserve is not None and reserving else keys[0])
        keys.insert(4, schedule[0] if schedule is not None else keys[0])
        keys.insert(5, self.line_key(user_id))
        if not forget_legacy:
            keys = keys[:6]
        args = [
            token,
            value or "",
            self._state_ttl,
            str(user_id),
            read_digest,
            as_handled_id(event_id) if value else "",
            self._dedupe_window,
            str(keep_lock_ms if value else 0),
            self._clock.now_ms() if reserving else "",
        ]
        args += reserve.args() if reserve is not None and reserving else ["", "", ""]
        args += [schedule[1], schedule[2]] if schedule is not None else ["", ""]
        args.append(as_orders(followers or []))
        sent = time.monotonic()
        status, *reserved = await self._run(self._write_and_unlock, keys, args)
        if reserved and int(reserved[0]):  # the script read the server's clock: track it
            self._clock.read(int(reserved[0]), sent, time.monotonic())
        done = Written(int(status), [int(wait) for wait in reserved[1:]])
        if done.status and value and forget_legacy and not self._legacy_in_scripts:
            await self._redis.hdel(self._prefix, str(user_id))
        return done

    async def extend_lock(self, user_id: int | str, token: str) -> bool:
        """Give the user's lock a fresh TTL if it is still ours; False if it was lost."""
        extended = await self._run(
            self._extend_lock, [self.lock_key(user_id)], [token, self._lock_ttl]
        )
        return bool(extended)

    @property
    def redis(self) -> RedisClient:
        return self._redis

    async def mark_handled(self, user_id: int | str, event_id: str) -> bool:
        """Record `event_id` as handled without a step (handled.py); False if it was before."""
        args = [as_handled_id(event_id), self._dedupe_window]
        return bool(await self._run(self._mark_handled, [self.seen_key(user_id)], args))

    async def run_script(self, script: AsyncScript, keys: list[str], args: list[str]) -> Any:
        """Run another module's script (timers.py) in the same batches as this store's."""
        return await self._run(script, keys, args)

    async def _run(
        self,
        script: AsyncScript,
        keys: list[str],
        args: list[str],
        *,
        orphaned: Callable[[Any], None] | None = None,
    ) -> Any:
        if self._pipeline is not None:
            return await self._pipeline(script, keys, args, orphaned=orphaned)
        if orphaned is None:
            return await script(keys=keys, args=args)
        # Without the pipeline: run the call as a task of its own that a cancelled caller
        # does not cancel, and hand its result to `orphaned` if the caller is gone.
        call = asyncio.ensure_future(script(keys=keys, args=args))
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:

            def hand_over(done: asyncio.Future[Any]) -> None:
                if not done.cancelled() and done.exception() is None:
                    orphaned(done.result())

            call.add_done_callback(hand_over)
            raise

    async def read(self, user_id: int | str) -> bytes | None:
        """Read the stored value without the lock (for inspection, not for transitions)."""
        key = self.state_key(user_id)
        if await self._redis.type(key) not in (b"string", "string", b"none", "none"):
            return None
        value = _as_bytes(await self._redis.get(key))
        if value is None and self._legacy:
            value = await self.read_legacy(user_id)
        return value

    async def forget(self, user_id: int | str) -> None:
        """Delete the user's stored value (also from the 0.1.0 hash); the caller holds the lock.

        The handled events stay: forgetting a user must not let a re-delivery run again.
        """
        await self._redis.delete(self.state_key(user_id))
        if self._legacy and await self._redis.type(self._prefix) in (b"hash", "hash"):
            await self._redis.hdel(self._prefix, str(user_id))

    async def read_legacy(self, user_id: int | str) -> bytes | None:
        """Read the user's value from botnodes 0.1.0's single hash, if it is still there."""
        if await self._redis.type(self._prefix) not in (b"hash", "hash"):
            return None
        return _as_bytes(await self._redis.hget(self._prefix, str(user_id)))
