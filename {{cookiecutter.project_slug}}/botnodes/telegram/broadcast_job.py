"""A broadcast job's record in Redis, its checks and its patience with Redis (see broadcast.py).

The record is one hash per shard and job: each claimed user's mark and the counts. Its two
scripts are safe to repeat, which is what lets `patiently` retry them through a Redis restart
without losing or double-counting a user.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from redis.exceptions import RedisError

from .bulk_window import WINDOW_FUNCTIONS

logger = logging.getLogger("botnodes.telegram.broadcast")

T = TypeVar("T")

#: A job id names the job's keys in Redis: short, and no character Redis or a shell minds.
JOB_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: A job's record is kept this long after its last claim: run it again within it to resume.
JOB_TTL_SECONDS = 30 * 86_400
#: Seconds one Redis call of the job is retried (with backoff) before the job gives up, unless
#: BROADCAST_REDIS_PATIENCE says otherwise.
REDIS_PATIENCE = 60.0
#: Seconds one Redis call of the job may take before it is cut and tried again.
CALL_DEADLINE = 2.0

#: Marks in a job's record: claimed, sent, blocked, failed, and sent with no readable answer.
CLAIMED, SENT, BLOCKED, FAILED, UNKNOWN = "c", "s", "b", "f", "u"

#: KEYS: the shard's blocked set, the job's record. ARGV: TTL, this call's token, the token of
#: the process's previous call (its answer arrived: forget it), the users. A call repeated
#: after its answer was lost (Redis restarted, a dropped connection) returns what the first
#: one claimed instead of finding its users taken by somebody.
CLAIM_SCRIPT = """
local done = redis.call('HGET', KEYS[2], '!' .. ARGV[2])
if done then return cjson.decode(done) end
if ARGV[3] ~= '' then redis.call('HDEL', KEYS[2], '!' .. ARGV[3]) end
local claimed = {}
local blocked = 0
for i = 4, #ARGV do
  local user = ARGV[i]
  if redis.call('HEXISTS', KEYS[2], user) == 0 then
    if redis.call('SISMEMBER', KEYS[1], user) == 1 then
      redis.call('HSET', KEYS[2], user, 'b')
      blocked = blocked + 1
    else
      redis.call('HSET', KEYS[2], user, 'c')
      claimed[#claimed + 1] = user
    end
  end
end
if blocked > 0 then redis.call('HINCRBY', KEYS[2], '#b', blocked) end
if #claimed > 0 then redis.call('HINCRBY', KEYS[2], '#c', #claimed) end
if #claimed > 0 then
  redis.call('HSET', KEYS[2], '!' .. ARGV[2], cjson.encode(claimed))
else
  redis.call('HSET', KEYS[2], '!' .. ARGV[2], '[]')
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return claimed
"""

#: Returns the ms left of a pause a 429 put on the job (PAUSE_SCRIPT), 0 if none: every
#: process hears of a 429 with its next send's record, without a call of its own.
_PAUSE_LEFT = """
local function pause_left()
  local till = tonumber(redis.call('HGET', KEYS[1], '!pause') or '0')
  if till == 0 then return 0 end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if till > now then return till - now end
  return 0
end
"""

#: KEYS: the job's record, the shard's blocked set[, the bulk window]. ARGV: user, outcome
#: (s, b, f, u)[, the send's place in the window: freed a second from now, bulk_window.py].
#: Repeated (its answer lost), it finds the user no longer claimed and changes nothing.
FINISH_SCRIPT = (
    WINDOW_FUNCTIONS
    + _PAUSE_LEFT
    + """
if KEYS[3] then free_place(KEYS[3], ARGV[3]) end
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'c' then return pause_left() end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], '#c', -1)
redis.call('HINCRBY', KEYS[1], '#' .. ARGV[2], 1)
if ARGV[2] == 'b' then redis.call('SADD', KEYS[2], ARGV[1]) end
return pause_left()
"""
)

#: KEYS: one shard's job record. ARGV: ms to pause. Sets the record's pause to now + ms on
#: Redis's clock (one clock for every process), unless a longer one is set; a record nobody
#: created yet is left alone (no sends in flight there; no key without its TTL).
PAUSE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('TIME')
local till = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
if till > tonumber(redis.call('HGET', KEYS[1], '!pause') or '0') then
  redis.call('HSET', KEYS[1], '!pause', till)
end
return 1
"""


class BroadcastError(Exception):
    """A bad job id or text; the message is one line."""


def check_job(
    job_id: str,
    text: str,
    translations: Mapping[str, str] | None = None,
    languages: tuple[str, ...] = (),
) -> None:
    """Refuse what can't make a job, naming the value and the rule (`languages`: the bot's)."""
    if not JOB_ID.fullmatch(job_id):
        raise BroadcastError(f"--id {job_id!r}: must be 1 to 64 characters of A-Z a-z 0-9 _ . -")
    _check_text("--text", text)
    for language, translated in (translations or {}).items():
        if language not in languages:
            have = ", ".join(languages)
            raise BroadcastError(f"--text-in {language!r}: the bot has no such language ({have})")
        _check_text(f"--text-in {language}", translated)


def _check_text(option: str, text: str) -> None:
    if not text.strip():
        raise BroadcastError(f"{option}: must not be empty")
    if len(text) > 4096:
        raise BroadcastError(f"{option}: {len(text)} characters, Telegram takes at most 4096")


async def patiently(call: Callable[[], Awaitable[T]], patience: float = REDIS_PATIENCE) -> T:
    """`call()`, retried with backoff while Redis does not answer, for up to `patience` s.

    Each try is cut after CALL_DEADLINE, so a frozen Redis (one that keeps the connection
    open and never answers) is waited for like a dead one, not for REDIS_SOCKET_TIMEOUT per
    call. A Redis restart of a few seconds pauses the job instead of ending it with a
    traceback, and a send Telegram confirmed is still recorded. The job's scripts are safe to
    repeat (a cut call may have run).
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + patience
    delay = 0.05
    while True:
        try:
            async with asyncio.timeout(min(CALL_DEADLINE, max(give_up - loop.time(), 0.1))):
                answer = await call()
        except (RedisError, OSError) as error:  # OSError: TimeoutError too
            if loop.time() + delay > give_up:
                raise RedisPatienceError(patience, error) from error
            if not _outage.is_set():  # one line per outage, not one per waiting call
                _outage.set()
                logger.warning(
                    "Broadcast: Redis does not answer (%s); the job waits up to %gs",
                    str(error) or "no answer in time",
                    patience,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        if _outage.is_set():
            _outage.clear()
            logger.warning("Broadcast: Redis answers again; the job goes on")
        return answer


#: Set while the job's calls find Redis away (logged when it starts and when it ends).
_outage = asyncio.Event()


class RedisPatienceError(RedisError):
    """Redis did not answer for the job's whole patience; the message is one line."""

    def __init__(self, patience: float, error: BaseException) -> None:
        reason = str(error) or "no answer in time"
        super().__init__(f"Redis did not answer for {patience:g}s ({reason})")
