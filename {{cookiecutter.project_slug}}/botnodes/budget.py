"""A rate budget reserved inside the commit: a step's replies get their turns for free.

A bot that paces its messages (Telegram asks for about one a second per chat, across every
replica) keeps the pace in Redis. Asking for turns after the step is stored costs a lone user
one more round trip per update that replies; the commit script already runs in the user's
slot, so it reserves the turns there and hands back each reply's wait.

botnodes knows nothing of Telegram: a `ReplyBudget` (the runtime's send limiter) says, for the
user whose step is being stored, which key holds the budget (it must carry the user's Redis
Cluster hash tag) and how many turns to take, and is told the waits. The algorithm is GCRA
(the "generic cell rate algorithm"): it never refuses, it hands out a time for each message,
on the Redis server's clock, so every replica counts from one clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

#: `gcra(key, interval_ms, burst, count)`: each of `count` messages' wait in ms from now.
#: The key holds the theoretical arrival time (ms) of the budget's next message; a key of
#: another type (a bug, a hand-made value) counts as an idle budget and is overwritten.
#: `gcra_after_read(key, stored, ..., now)` is the same for a script that already read the key
#: (the commit script's one MGET): `stored` is what it gave, false when missing; `now` is the
#: Redis server's clock in ms as the caller tracks it (`ServerClock`), or nil: then the
#: function reads it (`TIME`) and `server_now` holds what it read, for the caller to sync on.
GCRA_FUNCTION = """
local server_now = 0
local function gcra_after_read(key, stored, interval, burst, count, now)
  if now == nil then
    local clock = redis.call('TIME')
    now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
    server_now = now
  end
  local tolerance = interval * (burst - 1)
  local tat = 0
  if type(stored) == 'string' then tat = tonumber(stored) or 0 end
  if tat < now then tat = now end
  local waits = {}
  for i = 1, count do
    local wait = tat - tolerance - now
    if wait < 0 then wait = 0 end
    waits[i] = wait
    tat = tat + interval
  end
  redis.call('SET', key, string.format('%d', tat), 'PX', tat - now + 1)
  return waits
end
local function gcra(key, interval, burst, count)
  return gcra_after_read(key, redis.pcall('GET', key), interval, burst, count)
end
"""


class ServerClock:
    """The Redis server's clock (ms) as this process tracks it, so the commit need not ask.

    Every replica paces a chat on one clock, the Redis server's. Reading it costs a `TIME` in
    the script; instead the commit script reads it only when this process has no fresh
    reading (at first, then every `RESYNC` seconds) and answers what it read. The process
    places that reading at the middle of the call's round trip on its own monotonic clock
    (which no wall-clock step moves) and runs from there: its error is at most half the
    round trip it was taken on (kept under `MAX_ERROR_MS`, else read again soon), and the
    monotonic clock's drift over `RESYNC` is microseconds.
    """

    RESYNC = 60.0
    MAX_ERROR_MS = 10.0

    def __init__(self) -> None:
        self._offset_ms: float | None = None
        self._good_until = 0.0

    def now_ms(self) -> str:
        """The server's clock for a script's ARGV, or '' when the script should read it."""
        now = time.monotonic()
        if self._offset_ms is None or now >= self._good_until:
            return ""
        return str(int(now * 1000 + self._offset_ms))

    def read(self, server_ms: int, sent: float, answered: float) -> None:
        """A script read the server's clock (`server_ms`) between `sent` and `answered`
        (`time.monotonic()` before the call and after its answer)."""
        error_ms = (answered - sent) * 1000 / 2
        if self._offset_ms is not None and error_ms > self.MAX_ERROR_MS:
            self._good_until = answered + 1.0  # a slow trip: keep the reading, try soon
            return
        self._offset_ms = server_ms - (sent + answered) * 1000 / 2
        fresh = error_ms <= self.MAX_ERROR_MS
        self._good_until = answered + (self.RESYNC if fresh else 1.0)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Turns to take from one budget: `count` messages, one every `interval_ms`, `burst` at once."""

    key: str
    interval_ms: int
    burst: int
    count: int

    def args(self) -> list[str]:
        return [str(self.interval_ms), str(self.burst), str(self.count)]


class ReplyBudget(Protocol):
    """What the commit asks before storing a step, and tells once it is stored."""

    def reservation(self, user_id: Any) -> Reservation | None:
        """The turns the step being committed needs, or None (nothing to reserve)."""

    def reserved(self, user_id: Any, waits_ms: list[int]) -> None:
        """The step is stored and its turns taken: each reply's wait in ms from now."""
