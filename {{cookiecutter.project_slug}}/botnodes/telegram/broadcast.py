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
  new one rather than go out bunched with the next; a 429 that comes anyway is waited out.
- Once per user: before a message goes out, its user is claimed in the job's record
  (one hash per shard and job, next to the shard's set). A user already in the record is
  never sent the job again: a second process running the same job takes the users the
  first has not claimed, and running the command again after a crash, SIGKILL or SIGTERM
  resumes where the job stopped. The price of that rule is at most once: a process killed
  between claiming users and sending to them leaves those users (a handful: the claims run
  just ahead of the sends) without the message; the summary counts them as unconfirmed.
- Outcomes: 403 (blocked, deactivated) marks the user blocked, so later broadcasts skip
  them; 400 "chat not found" and other refusals count as failed, logged once, not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramForbiddenError, TelegramRetryAfter

from .app import App
from .definition import BotDefinition
from .language import Languages
from .metrics import BotMetrics
from .polling import serve_metrics
from .recipients import SHARDS, Recipients
from .send_limits import SendLimiter
from .settings import BotSettings
from .telegram_limits import caller_handles_429

logger = logging.getLogger(__name__)

#: A job id names the job's keys in Redis: short, and no character Redis or a shell minds.
JOB_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Users claimed per script call: the most a SIGKILL can leave unconfirmed per batch.
CLAIM_BATCH = 10
#: Sends in flight (waiting for their turn or for Telegram) in one process.
IN_FLIGHT = 2 * CLAIM_BATCH
#: A job's record is kept this long after its last claim: run it again within it to resume.
JOB_TTL_SECONDS = 30 * 86_400
#: Tries of one message that Telegram answers 429 (each after its retry_after and a new turn).
FLOOD_TRIES = 5
#: Seconds between two progress lines when the output is not a terminal.
PLAIN_PROGRESS_EVERY = 5.0
BAR_WIDTH = 30
#: Seconds without news after which claims of other processes count as unconfirmed.
SETTLE_SECONDS = 5.0

#: Marks the claim script leaves in a job's record: claimed, sent, blocked, failed.
CLAIMED, SENT, BLOCKED, FAILED = "c", "s", "b", "f"

CLAIM_SCRIPT = """
local claimed = {}
local blocked = 0
for i = 2, #ARGV do
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
redis.call('EXPIRE', KEYS[2], ARGV[1])
return claimed
"""

#: KEYS: the job's record, the shard's blocked set. ARGV: user, outcome (s, b, f).
FINISH_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'c' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], '#c', -1)
redis.call('HINCRBY', KEYS[1], '#' .. ARGV[2], 1)
if ARGV[2] == 'b' then redis.call('SADD', KEYS[2], ARGV[1]) end
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


@dataclass(frozen=True, slots=True)
class Counts:
    """A job's outcomes so far, over every process that worked on it."""

    sent: int = 0
    blocked: int = 0
    failed: int = 0
    unconfirmed: int = 0

    @property
    def done(self) -> int:
        return self.sent + self.blocked + self.failed + self.unconfirmed

    def summary(self, job_id: str) -> str:
        line = (
            f"Broadcast {job_id}: sent {self.sent}, skipped as blocked {self.blocked}, "
            f"failed {self.failed}"
        )
        if self.unconfirmed:
            line += (
                f", unconfirmed {self.unconfirmed} (being sent by another process, or claimed"
                " by one that was killed: not sent again)"
            )
        return line


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
        self._claim = self._redis.register_script(CLAIM_SCRIPT)
        self._finish = self._redis.register_script(FINISH_SCRIPT)
        self._stopping = asyncio.Event()
        # Sends of this process never closer together than the bulk rate allows: a loop that
        # lagged makes them late, not bunched (Telegram counts what arrives in a second).
        self._gap = limiter.bulk.interval_ms / 1000
        self._last_send = 0.0
        self._pacing = asyncio.Lock()
        self._sends: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Claim nobody more; the sends already claimed finish (SIGTERM, Ctrl-C)."""
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
        fields = ("#" + SENT, "#" + BLOCKED, "#" + FAILED, "#" + CLAIMED)
        totals = [0, 0, 0, 0]
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
            cursor, found = await self._redis.sscan(users, cursor, count=100)
            for begin in range(0, len(found), CLAIM_BATCH):
                # Claim only as far ahead as sends can start: a kill leaves few unconfirmed.
                while len(self._sends) > IN_FLIGHT - CLAIM_BATCH:
                    await asyncio.wait(self._sends, return_when=asyncio.FIRST_COMPLETED)
                if self.stopped:
                    return
                batch = found[begin : begin + CLAIM_BATCH]
                claimed = await self._claim(keys=keys, args=[JOB_TTL_SECONDS, *batch])
                await self._send_all(shard, [int(user) for user in claimed])
            if cursor == 0:
                return

    async def _send_all(self, shard: int, users: list[int]) -> None:
        if not users:
            return
        waits = await self._limiter.reserve_bulk(len(users))
        loop = asyncio.get_running_loop()
        for user, wait in zip(users, waits, strict=True):
            task = asyncio.create_task(self._send(shard, user, loop.time() + wait))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send(self, shard: int, user: int, at: float) -> None:
        try:
            await self._take_turn(at)
            outcome = await self._deliver(user)
            keys = [
                self._recipients.job_key(shard, self._job_id),
                self._recipients.blocked_key(shard),
            ]
            await self._finish(keys=keys, args=[user, outcome])
            if self._metrics is not None:
                name = {SENT: "sent", BLOCKED: "blocked", FAILED: "failed"}[outcome]
                self._metrics.broadcast_messages.labels(name).inc()
        except Exception:  # one user's failure must not end the job; it stays unconfirmed
            logger.exception("Broadcast %s: user %s", self._job_id, user)

    async def _take_turn(self, at: float) -> None:
        """Wait for the turn at loop time `at`; a turn missed, take a new one.

        After a stall of this loop (or of Redis) several sends wake up late at once. Sent
        then, they would reach Telegram together with the other process's on-time sends and
        make a second with more than the bulk rate: a 429. A send more than one interval late
        goes to the back of the shared queue instead (one more script call, for those only).
        """
        loop = asyncio.get_running_loop()
        await self._limiter.wait("bulk", at - loop.time())
        if loop.time() - at > self._gap:
            [wait] = await self._limiter.reserve_bulk(1)
            await self._limiter.wait("bulk", wait)
        await self._keep_apart()

    async def _keep_apart(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._pacing:
            gap = self._last_send + self._gap - loop.time()
            if gap > 0:
                await asyncio.sleep(gap)
            self._last_send = loop.time()

    async def _text_for(self, user: int) -> str:
        """The message in the user's language, if the job has it (one small read when it may)."""
        if not self._translations or self._languages is None:
            return self._text
        return self._translations.get(await self._languages.of(user), self._text)

    async def _deliver(self, user: int) -> str:
        text = await self._text_for(user)
        for tries_left in range(FLOOD_TRIES - 1, -1, -1):
            try:
                with caller_handles_429():
                    await self._bot.send_message(user, text)
            except TelegramRetryAfter as error:
                if not tries_left:
                    logger.warning("Broadcast %s: user %s failed: %s", self._job_id, user, error)
                    return FAILED
                # Telegram's flood control: wait as asked, then take a new bulk turn, so the
                # retry does not come on top of the rate (and cause the next 429).
                logger.warning("Broadcast %s: 429, retry in %ss", self._job_id, error.retry_after)
                await asyncio.sleep(error.retry_after)
                [wait] = await self._limiter.reserve_bulk(1)
                await self._take_turn(asyncio.get_running_loop().time() + wait)
                continue
            except TelegramForbiddenError as error:
                logger.info("Broadcast %s: user %s blocked the bot (%s)", self._job_id, user, error)
                return BLOCKED
            except TelegramAPIError as error:  # 400 chat not found and the like: not retried
                logger.warning("Broadcast %s: user %s failed: %s", self._job_id, user, error)
                return FAILED
            return SENT
        return FAILED  # not reached: the last try returns


class Progress:
    """A bar with counts and ETA on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, job_id: str, total: int, stream: TextIO = sys.stderr) -> None:
        self._job_id = job_id
        self._total = max(total, 1)
        self._stream = stream
        self._tty = stream.isatty()
        self._started = time.monotonic()
        self._first: int | None = None
        self._last_line = 0.0

    def show(self, counts: Counts, *, final: bool = False) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = counts.done
        if not self._tty and not final and now - self._last_line < PLAIN_PROGRESS_EVERY:
            return
        self._last_line = now
        rate = (counts.done - self._first) / max(now - self._started, 1e-6)
        left = max(self._total - counts.done, 0)
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        line = (
            f"{counts.done}/{self._total} sent {counts.sent} blocked {counts.blocked} "
            f"failed {counts.failed} | {rate:.1f}/s | ETA {eta}"
        )
        if self._tty:
            filled = int(BAR_WIDTH * min(counts.done / self._total, 1.0))
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self._stream.write(f"\r[{bar}] {line}" + ("\n" if final else ""))
        else:
            self._stream.write(f"Broadcast {self._job_id}: {line}\n")
        self._stream.flush()


async def settled(job: Broadcast, progress: Progress) -> Counts:
    """The job's counts once other processes' sends are confirmed too, or stopped moving.

    Claims that stay unconfirmed for `SETTLE_SECONDS` belong to a process that died (or
    to one still waiting out a long flood control): they are reported as unconfirmed.
    """
    counts = await job.counts()
    still = time.monotonic()
    while counts.unconfirmed and time.monotonic() - still < SETTLE_SECONDS:
        await asyncio.sleep(0.2)
        latest = await job.counts()
        if latest != counts:
            counts, still = latest, time.monotonic()
            progress.show(counts)
    return counts


async def run_job(job: Broadcast, job_id: str, *, dry_run: bool, out: TextIO) -> int:
    """Run (or count) the job until done or stopped; print the summary line. Exit status."""
    if dry_run:
        reachable = await job.reachable()
        print(f"Broadcast {job_id} (dry run): would send to {reachable} users", file=out)
        return 0
    progress = Progress(job_id, await job.total())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, job.stop)
    worker = asyncio.create_task(job.run())
    try:
        while not worker.done():
            progress.show(await job.counts())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(worker), 1.0)
        await worker
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    counts = await settled(job, progress)
    progress.show(counts, final=True)
    print(counts.summary(job_id), file=out)
    if job.stopped:
        print(f"Stopped: run the same command again to resume {job_id}", file=out)
        return 1
    return 0


async def broadcast(
    definition: BotDefinition[Any, Any],
    settings: BotSettings,
    job_id: str,
    text: str,
    *,
    dry_run: bool,
    translations: Mapping[str, str] | None = None,
) -> int:
    """Build the bot's parts (its Bot with the limits, Redis, metrics) and run the job."""
    app = App(definition, settings)
    metrics_runner = None
    try:
        await app.check_dependencies()
        if settings.metrics.port:
            metrics_runner = await serve_metrics(app)
        # The bulk budget paces a broadcast even with SEND_LIMITS off (then per-chat isn't).
        limiter = app.limiter or SendLimiter(
            app.redis, settings.state.state_key, settings.send_limits, app.metrics.send_limit_wait
        )
        job = Broadcast(
            app.bot,
            app.recipients,
            limiter,
            job_id=job_id,
            text=text,
            translations=translations,
            languages=app.ctx.languages,
            metrics=app.metrics,
        )
        return await run_job(job, job_id, dry_run=dry_run, out=sys.stdout)
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await app.close()
