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

from dataclasses import dataclass
from typing import Any, Protocol

#: `gcra(key, interval_ms, burst, count)`: each of `count` messages' wait in ms from now.
#: The key holds the theoretical arrival time (ms) of the budget's next message; a key of
#: another type (a bug, a hand-made value) counts as an idle budget and is overwritten.
#: `gcra_after_read(key, stored, ...)` is the same for a script that already read the key
#: (the commit script's one MGET): `stored` is what it gave, false when missing.
GCRA_FUNCTION = """
local function gcra_after_read(key, stored, interval, burst, count)
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
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
