"""The bulk window: at most `BROADCAST_LIMIT` broadcast messages in any second as Telegram
counts them, whatever the network does to their spacing.

Telegram counts a message when it arrives; the bulk budget (send_limits.py) paces sends by
when they start. With latency jitter, sends started evenly arrive bunched, and a pace under
30 a second still meets 429s. Where a message arrives is unknown, but it is between its
send's start and its answer. So each send holds a *place* from its start until 1 s after its
answer, and at most `BROADCAST_LIMIT` places are held at any moment: all messages Telegram
counts in one second (the last of them at t) held their places at t together, so they are at
most the limit, whatever the latency. The price: a place is held for 1 s plus the round
trip, so the window allows at most `BROADCAST_LIMIT / (1 + round trip)` sends a second.

The places are a sorted set in Redis (member: the place, score: when it frees, on Redis's
clock, read by `TIME` inside the script), its key next to the bulk budget's in the `{bulk}`
slot. A place taken is held `LEASE_MS` (a process killed mid-send frees its places then);
its answer shortens that to 1 s from then. On a single Redis no call is added per send: the
place is taken by the script that reserves the chat's turn (which `KeepSendRate` would
otherwise call: it finds the turn taken, see `send_limits.use_turn`), and freed by the
script that records the send's outcome (broadcast_job.FINISH_SCRIPT). On a Redis Cluster
the keys are in other slots: a call each.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random

from redis.asyncio import RedisCluster

from botnodes.budget import GCRA_FUNCTION

from .redis_connection import RedisClient
from .send_limits import SendLimiter, use_turn

#: Most ms a place is held by a send that never reports its answer (killed, Redis away).
LEASE_MS = 10_000
#: A place is held this long after its send's answer: Telegram's window.
HOLD_MS = 1_000

#: Lua: `take_place(key, limit, id)` takes a place (returns 0) or answers the ms until the
#: first held place frees (a send in flight: its lease, so callers wait less and ask again);
#: `free_place(key, id)` frees it HOLD_MS from now (never later than it would).
WINDOW_FUNCTIONS = f"""
local function window_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function take_place(key, limit, id)
  local now = window_now()
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, now + {LEASE_MS}, id)
    redis.call('PEXPIRE', key, {LEASE_MS})
    return 0
  end
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return math.max(tonumber(first[2]) - now, 1)
end
local function free_place(key, id)
  redis.call('ZADD', key, 'XX', 'LT', window_now() + {HOLD_MS}, id)
end
"""

#: KEYS[1]: the window. ARGV: limit, place. Returns 0 (taken) or ms to wait.
TAKE_SCRIPT = WINDOW_FUNCTIONS + "return take_place(KEYS[1], tonumber(ARGV[1]), ARGV[2])\n"

#: KEYS[1]: the window. ARGV[1]: place. Frees it HOLD_MS from now.
FREE_SCRIPT = WINDOW_FUNCTIONS + "free_place(KEYS[1], ARGV[1])\nreturn 1\n"

#: KEYS: the window, the chat's budget. ARGV: limit, place, the chat's interval and burst.
#: A place, and with it the chat's turn: {0, chat's wait ms}, or {ms to wait, -1} (no turn
#: taken while there is no place: it would push the chat's next turn for nothing).
TAKE_WITH_TURN_SCRIPT = (
    WINDOW_FUNCTIONS
    + GCRA_FUNCTION
    + """
local wait = take_place(KEYS[1], tonumber(ARGV[1]), ARGV[2])
if wait > 0 then return {wait, -1} end
local turns = gcra(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]), 1)
return {0, turns[1]}
"""
)


class BulkWindow:
    """Places in the window, shared by every process through Redis (see the module doc)."""

    def __init__(self, redis: RedisClient, limiter: SendLimiter) -> None:
        self._limiter = limiter
        self.limit = limiter.bulk_limit
        self.key = limiter.bulk_key + ":window"
        #: One Redis: the place comes with the chat's turn and goes with the outcome's record.
        self.folded = not isinstance(redis, RedisCluster)
        self._take = redis.register_script(TAKE_SCRIPT)
        self._take_with_turn = redis.register_script(TAKE_WITH_TURN_SCRIPT)
        self._free = redis.register_script(FREE_SCRIPT)
        self._ids = itertools.count()
        self._base = f"{os.getpid()}.{random.getrandbits(48):x}"
        #: Most seconds between two asks while the window is full (the bulk interval).
        self._poll = limiter.bulk.interval_ms / 1000

    async def take(self, chat_id: int) -> str:
        """Wait for a place and take it; returns it (free it with `free` or the outcome).

        On one Redis the same call takes the chat's turn (`use_turn`: the message's send
        waits for it without asking Redis). While the window is full, this asks again when
        the first place frees or after one bulk interval, whichever is first: callers take
        places one at a time per process (Broadcast's pacing lock), so a full window costs
        at most one call per interval and process.
        """
        place = f"{self._base}.{next(self._ids)}"
        budget = self._limiter.budget_of(chat_id)
        loop = asyncio.get_running_loop()
        while True:
            if self.folded:
                keys = [self.key, self._limiter.chat_key(chat_id)]
                args: list[str | int] = [self.limit, place, budget.interval_ms, budget.burst]
                wait_ms, turn_ms = await self._take_with_turn(keys=keys, args=args)
                if int(wait_ms) == 0:
                    use_turn(chat_id, loop.time() + int(turn_ms) / 1000)
                    return place
            else:
                wait_ms = await self._take(keys=[self.key], args=[self.limit, place])
                if int(wait_ms) == 0:
                    return place
            await self._limiter.wait("window", min(int(wait_ms) / 1000, self._poll))

    async def free(self, place: str) -> None:
        """Free `place` a second from now (a call of its own: a 429, or a cluster)."""
        await self._free(keys=[self.key], args=[place])
