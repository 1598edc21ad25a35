"""Durable timers: a node acts when its user goes quiet, with nothing but the Redis it has.

A node returns named timeouts from `Node.timeouts` (seconds after the user's last event on
it). After every stored step they become due times, kept in two places:

* in the user's stored value (`"_t"`, see codec.py), next to the node and its visit: this is
  the truth. An event replaces them, leaving the node drops them, so a timer of a past visit
  is simply no longer there and can't fire;
* in a schedule, a sorted set `<prefix>:timers:{t<shard>}` per shard (a user's shard is a
  hash of their id; the braces keep each shard in one Redis Cluster slot): the user's id,
  scored with a time to look at them in milliseconds, never later than their earliest due time.
  It only says when to look, and it is lazy: the stored timers keep the score the schedule was
  last given (`"s"` in `"_t"`), and a step whose earliest due time is no earlier than that
  leaves the schedule alone. A step that drops its timers leaves the user's entry too.

Every process polls the shards (`TimerLoop` in timer_loop.py, which `Nodes.run_timers` runs). A
claim script hands each due user to exactly one process by moving their score `claim_ttl` into
the future; that process then runs the timer as an event of the user (their queue, lock, stored
value, commit, replies after commit). Under the lock it checks that the timer is still pending
and due: a process killed mid-firing leaves the claim to expire and another process to fire it,
and a firing that was already stored finds nothing pending. So each timer runs once. A look
that finds nothing due (an entry woken early: the user's timers were armed again later since)
sets the score to their real earliest due time and stores it with their timers; one that finds
no timer left (the user left the node) drops the entry. A claimed user's score is set to the
truth by the claiming process under the lock, so the schedule never says "later" than the truth
for longer than a claim that died (`claim_ttl`). A claim or firing that Redis lets down is
given back when it answers again (timer_loop.py).

Cost: a step sets the schedule only when it arms a timer due earlier than what the schedule
holds for the user (or nothing is held): inside its commit script on a single Redis (one ZADD,
atomic with the stored value); on a Redis Cluster, whose shards are in other slots, as SCHEDULE
in the same pipeline batch as its commit. A step that re-arms the same timers later, drops
them, or has none, sends nothing: the work moves to one look per timer period, when the old
score falls due. Each process sends one EVALSHA of CLAIM per shard per poll (batched into one
round trip on a single Redis).
"""

from __future__ import annotations

import asyncio
import json
import math
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from redis.commands.core import AsyncScript

from .storage import RedisClient

# KEYS: one shard's schedule. ARGV: now in ms, claim TTL in ms, most users to claim.
# Returns [user, due ms, user, due ms, ...] for users due by now, each moved to now + TTL so
# no other process claims them meanwhile (and a process that dies firing leaves them to fire
# again after it).
CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[3])
local claimed_until = tonumber(ARGV[1]) + tonumber(ARGV[2])
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], claimed_until, due[i])
end
return due
"""

# KEYS: one shard's schedule. ARGV: the score a claim gave (now + TTL, in ms), the score to
# give back, the users (none: all that claim took). A user whose score is no longer the
# claim's (a step or another claim set it since) is left alone. Returns how many were given.
GIVE_BACK = """
local users = {}
for i = 3, #ARGV do users[#users + 1] = ARGV[i] end
if #users == 0 then users = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1]) end
local given = 0
for _, user in ipairs(users) do
  local score = redis.call('ZSCORE', KEYS[1], user)
  if score and tonumber(score) == tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[2], user)
    given = given + 1
  end
end
return given
"""

# KEYS: the user's shard. ARGV: user, their earliest due time in ms ('' = they have none).
SCHEDULE = """
if ARGV[2] == '' then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
"""

ScriptRunner = Callable[[AsyncScript, list[str], list[str]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class PendingTimers:
    """A stored node's timers: when they were armed (the user's last event) and when due.

    `scheduled_ms` is the score the user's schedule entry was last given by a holder of their
    lock (None: not known, the next step sets it). The entry is never later than that, save
    while a claim holds it, and the claiming process sets it to the truth under the lock.
    """

    armed_ms: int
    due: Mapping[str, int] = field(default_factory=dict)
    scheduled_ms: int | None = None

    @property
    def earliest(self) -> int | None:
        return min(self.due.values(), default=None)

    def next_due(self, now_ms: int) -> tuple[str, int] | None:
        """The timer to fire now (the earliest due, by name on a tie), or None."""
        ready = sorted((due, name) for name, due in self.due.items() if due <= now_ms)
        return (ready[0][1], ready[0][0]) if ready else None

    def to_json(self) -> dict[str, Any]:
        stored: dict[str, Any] = {"at": self.armed_ms, "due": dict(self.due)}
        if self.scheduled_ms is not None:
            stored["s"] = self.scheduled_ms
        return stored

    @classmethod
    def from_json(cls, stored: object) -> PendingTimers:
        """Read `"_t"` back; ValueError if it is not what `to_json` writes."""
        if not isinstance(stored, dict):
            raise ValueError("not an object")
        armed, due = stored.get("at"), stored.get("due")
        if not isinstance(armed, int) or isinstance(armed, bool) or not isinstance(due, dict):
            raise ValueError("needs a whole number 'at' and an object 'due'")
        if not all(isinstance(name, str) and _whole(ms) for name, ms in due.items()):
            raise ValueError("'due' must map names to whole numbers of ms")
        scheduled = stored.get("s")  # absent (before lazy scheduling) or unreadable: unknown
        return cls(
            armed, due, scheduled if isinstance(scheduled, int) and _whole(scheduled) else None
        )


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def arm(timeouts: Mapping[str, float], armed_ms: int) -> PendingTimers:
    """Due times for `timeouts` counted from `armed_ms`; 0 or less means off."""
    return PendingTimers(
        armed_ms,
        {
            name: armed_ms + math.ceil(seconds * 1000)
            for name, seconds in timeouts.items()
            if seconds > 0
        },
    )


def after_firing(
    pending: PendingTimers, fired: str, fired_due: int, timeouts: Mapping[str, float]
) -> PendingTimers:
    """What is left pending once `fired` ran and the user stayed on the node.

    The node's timeouts are asked again, still counted from the last event: one due after the
    fired one is armed, one that was pending stays, one whose time passed already (it fired
    before) is not armed again.
    """
    again = arm(timeouts, pending.armed_ms)
    return PendingTimers(
        pending.armed_ms,
        {
            name: due
            for name, due in again.due.items()
            if due > fired_due or (name in pending.due and name != fired)
        },
    )


def placement(
    timers: PendingTimers, before: PendingTimers | None, *, exact: bool
) -> tuple[PendingTimers, bool]:
    """The timers to store (with the score the schedule holds) and whether to set the schedule.

    A step sets the schedule only when its earliest due time is earlier than what the schedule
    holds (`before.scheduled_ms`), or nothing is known: a later one is found by a look at the
    old score, which sets it then (`Nodes._fire`). `exact` (a timer's own step, whose claim
    moved the score) always sets it to the truth: the earliest due time, or none.
    """
    earliest = timers.earliest
    if exact:
        return replace(timers, scheduled_ms=earliest), bool(timers.due or before)
    if earliest is None:
        return timers, False  # the entry left falls due, finds nothing and is dropped
    known = before.scheduled_ms if before is not None else None
    if known is not None and known <= earliest:
        return replace(timers, scheduled_ms=known), False
    return replace(timers, scheduled_ms=earliest), True


def changes(
    before: PendingTimers | None, after: PendingTimers | None
) -> tuple[list[str], list[str]]:
    """Timer names newly scheduled and cancelled (replaced or dropped) by a step, for metrics."""
    old = dict(before.due) if before else {}
    new = dict(after.due) if after else {}
    scheduled = [name for name, due in new.items() if old.get(name) != due]
    cancelled = [name for name, due in old.items() if new.get(name) != due]
    return scheduled, cancelled


class TimerSchedule:
    """The sharded sorted sets that say when to look at which user."""

    def __init__(self, redis: RedisClient, prefix: str, *, shards: int, run: ScriptRunner) -> None:
        self._prefix = prefix
        self._shards = shards
        self._run = run
        self._claim = redis.register_script(CLAIM)
        self._schedule = redis.register_script(SCHEDULE)
        self._give_back = redis.register_script(GIVE_BACK)

    @property
    def shards(self) -> int:
        return self._shards

    def shard_key(self, shard: int) -> str:
        return f"{self._prefix}:timers:{{t{shard}}}"

    def key_of(self, member: str) -> str:
        """The shard of a user: a stable hash of their id, the same in every process."""
        return self.shard_key(zlib.crc32(member.encode()) % self._shards)

    @staticmethod
    def member(user_id: int | str) -> str:
        """The user as stored in the schedule: JSON, so an int id comes back an int."""
        return json.dumps(user_id)

    @staticmethod
    def user_of(member: bytes | str) -> Any:
        return json.loads(member)

    def placement(self, user_id: int | str, earliest_ms: int | None) -> tuple[str, str, str]:
        """(shard key, member, due ms or '') for the commit script to set (storage.py)."""
        member = self.member(user_id)
        return self.key_of(member), member, "" if earliest_ms is None else str(earliest_ms)

    async def set(self, user_id: int | str, earliest_ms: int | None) -> None:
        """Look at the user at `earliest_ms` (None: never); the caller holds their lock."""
        member = self.member(user_id)
        due = "" if earliest_ms is None else str(earliest_ms)
        await self._run(self._schedule, [self.key_of(member)], [member, due])

    async def claim(self, now_ms: int, claim_ttl_ms: int, limit: int) -> list[tuple[Any, int]]:
        """Take the users due by `now_ms` from every shard: (user id, due ms) each."""
        args = [str(now_ms), str(claim_ttl_ms), str(limit)]
        replies = await asyncio.gather(
            *(
                self._run(self._claim, [self.shard_key(shard)], args)
                for shard in range(self._shards)
            )
        )
        claimed: list[tuple[Any, int]] = []
        for reply in replies:
            for index in range(0, len(reply), 2):
                claimed.append((self.user_of(reply[index]), int(float(reply[index + 1]))))
        return claimed

    async def give_back(self, claims: list[GivenBack]) -> int:
        """Hand claims that could not be fired back to the schedule; how many users it took.

        Each user is due again at once (for this process's next look, or another's), unless
        a step or a later claim changed their score since. Safe to repeat: a timer fires under
        its user's lock only while it is still pending, so a claim given back twice, or given
        back after it fired, fires nothing twice.
        """
        replies = await asyncio.gather(
            *(
                self._run(
                    self._give_back,
                    [claim.shard_key],
                    [str(claim.claimed_until_ms), str(claim.due_ms), *claim.members],
                )
                for claim in claims
            )
        )
        return sum(int(reply) for reply in replies)


@dataclass(frozen=True, slots=True)
class GivenBack:
    """A claim to hand back: in `shard_key`, the users scored `claimed_until_ms` (`members`,
    or all of them) are due again at `due_ms`."""

    shard_key: str
    claimed_until_ms: int
    due_ms: int
    members: tuple[str, ...] = ()
