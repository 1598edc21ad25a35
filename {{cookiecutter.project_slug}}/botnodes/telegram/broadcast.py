"""`python -m <package> broadcast --id ID --text TEXT`: one message to every user, once.

- Languages: `--text-in ru TEXT` (as many as the bot has languages) gives the message in a
  language; each user gets it in theirs (their `/language` choice, else the language Telegram
  reported for them last, else DEFAULT_LANGUAGE; language.py), `--text` in any other. The
  message is the operator's, not a Fluent text: it is written for this one job.

- Recipients: the registry of recipients.py, shard by shard (`SSCAN` of one set, never the
  keyspace), minus the users who blocked the bot.
- Pace: each message takes a turn from the bulk budget (`BROADCAST_RATE` per second for all
  processes together) and from its chat's budget (send_limits.py), so neither Telegram's
  global nor its per-chat limit is hit; a send that missed its turn (a stalled loop) takes a
  new one rather than go out bunched with the next. It then takes a place in the bulk window
  (`BROADCAST_LIMIT` in any second, bulk_window.py): messages that arrive bunched (latency
  jitter) never make a second with more than Telegram counts. A 429 that comes anyway is
  waited out.
- Once per user: before a message goes out, its user is claimed in the job's record
  (one hash per shard and job, next to the shard's set). A user already in the record is
  never sent the job again: a second process running the same job takes the users the
  first has not claimed, and running the command again after a crash, SIGKILL or SIGTERM
  resumes where the job stopped. The price of that rule is at most once: a process killed
  between claiming users and sending to them leaves those users (a handful: the claims run
  just ahead of the sends) without the message; the summary counts them as unconfirmed.
- Outcomes: 403 (blocked, deactivated) marks the user blocked, so later broadcasts skip
  them; 400 "chat not found" and other refusals count as failed, logged once, not retried.
- At most once, also over a bad network: a send is made once (`send_at_most_once`, never the
  bot's general retry of network errors). A send whose request went out without a readable
  answer (a dropped connection, no answer within TELEGRAM_CALL_TIMEOUT, a 5xx or a proxy's
  error page, JSON or not) may have been delivered: it is counted unconfirmed, one line in
  the log, and never sent again. Only a 429 (Telegram did not deliver) is retried.
- A 429 pauses the job, in every process: the bulk budget is pushed `retry_after` ahead (the
  turns of that time are taken) and the pause is written in the job's record, which each
  process reads with its next send's record and then holds back the sends it gave turns.
- Redis away (or frozen) for a few seconds pauses the job: each Redis call is cut after
  CALL_DEADLINE and retried with backoff for up to BROADCAST_REDIS_PATIENCE, then the job
  stops with one line (exit 1) and the same command resumes it. A send Telegram confirmed is
  recorded once Redis is back, so its user is never left unconfirmed by the job's own
  bookkeeping. A claim is idempotent (a token per call), so a claim whose answer was lost is
  not lost with its users.

This module is the job (`Broadcast`); broadcast_command.py runs it as the command (progress,
signals, summary), broadcast_job.py keeps its record in Redis, broadcast_report.py counts it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiogram import Bot
from aiogram.exceptions import (
    AiogramError,
    TelegramAPIError,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from redis.exceptions import RedisError

from .broadcast_job import (
    BLOCKED,
    CLAIM_SCRIPT,
    CLAIMED,
    FAILED,
    FINISH_SCRIPT,
    JOB_TTL_SECONDS,
    PAUSE_SCRIPT,
    REDIS_PATIENCE,
    SENT,
    UNKNOWN,
    patiently,
)
from .broadcast_report import Counts
from .bulk_window import BulkWindow
from .language import Languages
from .metrics import BotMetrics
from .recipients import SHARDS, Recipients
from .send_limits import SendLimiter
from .telegram_limits import send_at_most_once

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Users claimed per script call: the most a SIGKILL can leave unconfirmed per batch.
CLAIM_BATCH = 10
#: Sends in flight (waiting for their turn or for Telegram) in one process.
IN_FLIGHT = 2 * CLAIM_BATCH
#: Tries of one message that Telegram answers 429 (each after its retry_after and a new turn).
FLOOD_TRIES = 5


class Broadcast:
    """One job, worked on by this process together with any other running the same job."""

    def __init__(
        self,
        bot: Bot,
        recipients: Recipients,
        limiter: SendLimiter,
        *,
        job_id: str,
        text: str,
        translations: Mapping[str, str] | None = None,
        languages: Languages | None = None,
        metrics: BotMetrics | None = None,
        redis_patience: float = REDIS_PATIENCE,
    ) -> None:
        self._bot = bot
        self._recipients = recipients
        self._redis = recipients.redis
        self._limiter = limiter
        self._job_id = job_id
        self._text = text
        self._translations = dict(translations or {})
        self._languages = languages
        self._metrics = metrics
        self._redis_patience = redis_patience
        #: Outcomes Redis did not take within its patience (their users stay claimed).
        self.unrecorded = 0
        #: The Redis error that ran out the job's patience: the job stops (exit status 1).
        self.redis_failure: RedisError | OSError | None = None
        #: Loop time of the first `stop()`.
        self.stopped_at = 0.0
        self._claim = self._redis.register_script(CLAIM_SCRIPT)
        self._finish = self._redis.register_script(FINISH_SCRIPT)
        self._pause_job = self._redis.register_script(PAUSE_SCRIPT)
        self._window = BulkWindow(self._redis, limiter)
        #: Each send's place in the window, by user (a job sends a user one message).
        self._places: dict[int, str] = {}
        self._stopping = asyncio.Event()
        # Sends of this process never closer together than the bulk rate allows: a loop that
        # lagged makes them late, not bunched (Telegram counts what arrives in a second).
        self._gap = limiter.bulk.interval_ms / 1000
        self._last_send = 0.0
        self._pacing = asyncio.Lock()
        self._sends: set[asyncio.Task[None]] = set()
        #: Loop time until which nobody is sent anything (a 429's retry_after).
        self._paused_until = 0.0
        self._token_base = f"{os.getpid()}.{random.getrandbits(48):x}"
        self._tokens = 0
        self._last_token: dict[int, str] = {}

    async def patiently(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` with the job's patience with Redis (broadcast_job.py). Once one call ran
        out of it, the job stops, and every later call fails at once: a send waiting its turn
        does not wait the patience again, so the job ends in about one patience."""
        if self.redis_failure is not None:
            raise RedisError(str(self.redis_failure))
        try:
            return await patiently(call, self._redis_patience)
        except (RedisError, OSError) as error:
            if self.redis_failure is None:
                self.redis_failure = error
                self.stop()
            raise

    def stop(self) -> None:
        """Claim nobody more; the sends already claimed finish (SIGTERM, Ctrl-C)."""
        if not self._stopping.is_set():
            self.stopped_at = asyncio.get_running_loop().time()
        self._stopping.set()

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    async def total(self) -> int:
        """Users in the registry, blocked ones included."""
        return sum([await self._redis.scard(self._recipients.shard_key(s)) for s in range(SHARDS)])

    async def reachable(self) -> int:
        """Users a job would send to now: registered and not blocked (the dry run's answer)."""
        count = 0
        for shard in range(SHARDS):
            users = self._recipients.shard_key(shard)
            blocked = await self._redis.sintercard(2, [users, self._recipients.blocked_key(shard)])
            count += await self._redis.scard(users) - int(blocked)
        return count

    async def counts(self) -> Counts:
        fields = ("#" + SENT, "#" + BLOCKED, "#" + FAILED, "#" + CLAIMED, "#" + UNKNOWN)
        totals = [0, 0, 0, 0, 0]
        for shard in range(SHARDS):
            key = self._recipients.job_key(shard, self._job_id)
            values = await self._redis.hmget(key, fields)
            totals = [total + int(value or 0) for total, value in zip(totals, values, strict=True)]
        return Counts(*totals)

    async def run(self) -> None:
        """Go through every shard (from a random one, so two processes start apart)."""
        start = random.randrange(SHARDS)  # noqa: S311 - spreading work, not a secret
        try:
            for step in range(SHARDS):
                if self.stopped:
                    break
                await self._run_shard((start + step) % SHARDS)
        finally:
            if self._sends:
                await asyncio.gather(*self._sends, return_exceptions=True)

    async def _run_shard(self, shard: int) -> None:
        users = self._recipients.shard_key(shard)
        keys = [self._recipients.blocked_key(shard), self._recipients.job_key(shard, self._job_id)]
        cursor = 0
        while True:
            cursor, found = await self.patiently(
                lambda: self._redis.sscan(users, cursor, count=100)  # noqa: B023 - awaited now
            )
            for begin in range(0, len(found), CLAIM_BATCH):
                # Claim only as far ahead as sends can start: a kill leaves few unconfirmed.
                while len(self._sends) > IN_FLIGHT - CLAIM_BATCH:
                    await asyncio.wait(self._sends, return_when=asyncio.FIRST_COMPLETED)
                if self.stopped:
                    return
                batch = found[begin : begin + CLAIM_BATCH]
                claimed = await self._claim_batch(shard, keys, batch)
                await self._send_all(shard, [int(user) for user in claimed])
            if cursor == 0:
                return

    async def _claim_batch(self, shard: int, keys: list[str], batch: list[Any]) -> list[Any]:
        self._tokens += 1
        token = f"{self._token_base}.{self._tokens}"
        args = [JOB_TTL_SECONDS, token, self._last_token.get(shard, ""), *batch]
        claimed: list[Any] = await self.patiently(lambda: self._claim(keys=keys, args=args))
        self._last_token[shard] = token
        return claimed

    async def _send_all(self, shard: int, users: list[int]) -> None:
        if not users:
            return
        waits = await self.patiently(lambda: self._limiter.reserve_bulk(len(users)))
        loop = asyncio.get_running_loop()
        for user, wait in zip(users, waits, strict=True):
            task = asyncio.create_task(self._send(shard, user, loop.time() + wait))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send(self, shard: int, user: int, at: float) -> None:
        try:
            await self._take_turn(at, user)
            outcome = await self._deliver(user)
        except (RedisError, OSError) as error:  # its turn could not be had: nothing was sent
            if self.redis_failure is None:  # else the job's stop line says it, once
                logger.warning("Broadcast %s: user %s not sent (%s)", self._job_id, user, error)
            outcome = FAILED
        keys = [
            self._recipients.job_key(shard, self._job_id),
            self._recipients.blocked_key(shard),
        ]
        args: list[Any] = [user, outcome]
        place = self._places.pop(user, None)
        if place is not None and self._window.folded:  # freed by the outcome's record
            keys.append(self._window.key)
            args.append(place)
        elif place is not None:
            await self._free(place)
        try:
            pause_ms = await self.patiently(lambda: self._finish(keys=keys, args=args))
        except (RedisError, OSError) as error:  # Redis away past its patience
            # The job stops with one line for all of them (broadcast_command.py); the user
            # stays claimed, so a rerun counts them unconfirmed and never sends them again.
            self.unrecorded += 1
            logger.debug(
                "Broadcast %s: user %s's outcome (%s) could not be recorded: %s",
                self._job_id,
                user,
                outcome,
                error,
            )
            return
        if pause_ms:  # another process met a 429: hold back what this one has given turns
            until = asyncio.get_running_loop().time() + int(pause_ms) / 1000
            self._paused_until = max(self._paused_until, until)
        if self._metrics is not None:
            name = {SENT: "sent", BLOCKED: "blocked", FAILED: "failed", UNKNOWN: "unconfirmed"}
            self._metrics.broadcast_messages.labels(name[outcome]).inc()

    async def _take_turn(self, at: float, user: int) -> None:
        """Wait for the turn at loop time `at`; a turn missed, take a new one. Then take a
        place in the bulk window for the send to `user` (kept in `_places`).

        After a stall of this loop (or of Redis) several sends wake up late at once. Sent
        then, they would reach Telegram together with the other process's on-time sends and
        make a second with more than the bulk rate: a 429. A send more than one interval late
        goes to the back of the shared queue instead (one more script call, for those only).
        """
        loop = asyncio.get_running_loop()
        await self._limiter.wait("bulk", at - loop.time())
        if loop.time() - at > self._gap:
            [wait] = await self.patiently(lambda: self._limiter.reserve_bulk(1))
            await self._limiter.wait("bulk", wait)
        self._places[user] = await self._keep_apart(user)

    async def _keep_apart(self, user: int) -> str:
        """Space this process's sends, wait out a pause, and take a place in the window
        (one send at a time: while the window is full, one asks for a place)."""
        loop = asyncio.get_running_loop()
        async with self._pacing:
            place = None
            # A pause heard of while waiting (a 429 here or in another process) counts too.
            for _ in range(FLOOD_TRIES):
                gap = max(self._last_send + self._gap, self._paused_until) - loop.time()
                if gap > 0:
                    await asyncio.sleep(gap)
                    continue
                place = await self.patiently(lambda: self._window.take(user))
                if self._paused_until <= loop.time():
                    break
                await self._free(place)  # a pause heard while waiting for the place
                place = None
            if place is None:
                place = await self.patiently(lambda: self._window.take(user))
            self._last_send = loop.time()
            return place

    async def _free(self, place: str) -> None:
        """Free a place with a call of its own (a 429, or a cluster); if Redis is away, its
        lease frees it."""
        try:
            await self.patiently(lambda: self._window.free(place))
        except (RedisError, OSError) as error:
            if self.redis_failure is None:  # else the job stops, with one line for all
                logger.warning(
                    "Broadcast %s: a place held until its lease (%s)", self._job_id, error
                )

    async def _pause(self, seconds: float) -> None:
        """A 429: nobody is sent anything for `seconds`, in this process or any other.

        The bulk budget's turns of that time are taken (one script call), so every process's
        next turn comes after it; the pause is written in the job's record (one call per
        shard, for a 429 only), where every process reads it with its next send's record and
        holds back its sends that already have a turn, as this process does at once.
        """
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        if until <= self._paused_until:
            return  # an earlier 429 paused the job already
        self._paused_until = until
        turns = max(math.ceil(seconds / self._gap), 1)
        await self.patiently(lambda: self._limiter.reserve_bulk(turns))
        records = [self._recipients.job_key(shard, self._job_id) for shard in range(SHARDS)]
        millis = [str(math.ceil(seconds * 1000))]
        await self.patiently(
            lambda: asyncio.gather(*(self._pause_job(keys=[key], args=millis) for key in records))
        )

    async def _text_for(self, user: int) -> str:
        """The message in the user's language, if the job has it (one small read when it may)."""
        if not self._translations or self._languages is None:
            return self._text
        return self._translations.get(await self._languages.of(user), self._text)

    async def _deliver(self, user: int) -> str:
        text = await self._text_for(user)
        for tries_left in range(FLOOD_TRIES - 1, -1, -1):
            try:
                with send_at_most_once():
                    await self._bot.send_message(user, text)
            except TelegramRetryAfter as error:
                if not tries_left:
                    logger.warning("Broadcast %s: user %s failed: %s", self._job_id, user, error)
                    return FAILED
                # Telegram's flood control (it delivered nothing): everybody waits as asked,
                # then this message takes a new bulk turn, after the pause.
                logger.warning("Broadcast %s: 429, paused for %ss", self._job_id, error.retry_after)
                await self._free(self._places.pop(user))
                await self._pause(float(error.retry_after))
                [wait] = await self.patiently(lambda: self._limiter.reserve_bulk(1))
                await self._take_turn(asyncio.get_running_loop().time() + wait, user)
                continue
            except TelegramForbiddenError as error:
                logger.info("Broadcast %s: user %s blocked the bot (%s)", self._job_id, user, error)
                return BLOCKED
            except (TelegramNetworkError, TelegramServerError) as error:
                return self._unknown(user, error)
            except TelegramAPIError as error:  # 400 chat not found and the like: not retried
                logger.warning("Broadcast %s: user %s failed: %s", self._job_id, user, error)
                return FAILED
            except AiogramError as error:  # an answer that is not Telegram's JSON (a proxy's)
                return self._unknown(user, error)
            return SENT
        return FAILED  # not reached: the last try returns

    def _unknown(self, user: int, error: Exception) -> str:
        """The request went out and no readable answer came: it may have been delivered."""
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        logger.warning(
            "Broadcast %s: user %s unconfirmed, not sent again (may have got it): %s",
            self._job_id,
            user,
            reason,
        )
        return UNKNOWN
