"""The bulk window: at most BROADCAST_LIMIT broadcast messages in any second as Telegram
counts them (when they arrive), whatever the network's latency does to the sends' spacing.

Real Redis, the Bot API stand-in with a jittery latency (`Latency`) enforcing the bulk limit;
tests/ops/test_broadcast.py runs two broadcast processes against it over HTTP.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter

from aiogram import Bot
from redis.asyncio import Redis

from botnodes.telegram.app import add_telegram_rules
from botnodes.telegram.broadcast import CLAIM_BATCH, Broadcast
from botnodes.telegram.broadcast_command import run_job
from botnodes.telegram.broadcast_job import CLAIMED, FINISH_SCRIPT, SENT
from botnodes.telegram.bulk_window import HOLD_MS, LEASE_MS, TAKE_SCRIPT, BulkWindow
from botnodes.telegram.recipients import Recipients
from botnodes.telegram.send_limits import SendLimiter
from botnodes.telegram.settings import SendLimitSettings
from botnodes.testing import FakeSession, FakeTelegram
from botnodes.testing.fake_bot_api import Latency, TelegramRates

from {{ cookiecutter.project_slug }}.settings import Settings

TEXT = "Soup of the day!"
#: Twice Telegram's bulk limit, so a test sees many seconds' worth of messages in a few.
LIMIT = 60
#: 0.95 of it: the pace the issue asks for.
RATE = 57.0
#: Each way 0 to 300 ms: sends started 17.5 ms apart arrive bunched.
LATENCY = Latency(0.15, jitter=1.0)


def bot_of(settings: Settings, telegram: FakeTelegram, limiter: SendLimiter | None = None) -> Bot:
    """A Bot answered by `telegram` with the runtime's rules (and `KeepSendRate`, given a
    limiter: the chat's turns a broadcast message takes, as `App` installs it)."""
    session = FakeSession(telegram)
    add_telegram_rules(session, settings.telegram, limiter=limiter)
    return Bot(settings.telegram.bot_token.get_secret_value(), session=session)


async def broadcast(
    settings: Settings, redis: Redis, users: range, jobs: int = 2, job_id: str = "window"
) -> tuple[FakeTelegram, TelegramRates, list[str]]:
    """`jobs` workers on one job to `users`, through a jittery network to a stand-in that
    enforces LIMIT a second; returns the stand-in, its rates and the workers' summaries."""
    recipients = Recipients(redis, settings.state.state_key)
    for user in users:
        await recipients.add(user)
    telegram = FakeTelegram(latency=LATENCY)
    rates = telegram.enforce_rates(TelegramRates(per_second=LIMIT, chat_burst=10))
    bot = bot_of(settings, telegram)
    limits = SendLimitSettings(_env_file=None, broadcast_rate=RATE, broadcast_limit=LIMIT)
    limiter = SendLimiter(redis, settings.state.state_key, limits)
    workers = [Broadcast(bot, recipients, limiter, job_id=job_id, text=TEXT) for _ in range(jobs)]
    outputs = [io.StringIO() for _ in workers]
    statuses = await asyncio.gather(
        *(run_job(w, job_id, dry_run=False, out=o) for w, o in zip(workers, outputs, strict=True))
    )
    assert statuses == [0] * jobs
    return telegram, rates, [out.getvalue() for out in outputs]


async def test_latency_jitter_bunches_no_second_over_the_limit(
    settings: Settings, redis_client: Redis
) -> None:
    """Paced at 0.95 of the limit by when they start, two workers' sends arrive bunched by
    the jitter; the window keeps every second as the stand-in counts it within the limit.
    Before the window: 429s (1 or 2 in 240 in four runs of 240 users; 360 here)."""
    users = range(8000, 8360)
    telegram, rates, outputs = await broadcast(settings, redis_client, users)
    assert outputs[0] == "Broadcast window: sent 360, skipped as blocked 0, failed 0\n"
    sent = [call for call in telegram.attempts("sendMessage") if call.ok]
    assert len(sent) == len(users)
    assert rates.refused == 0  # no second over the limit as the stand-in counts them


async def test_jobs_and_workers_sharing_the_window_never_exceed_the_limit(
    settings: Settings, redis_client: Redis
) -> None:
    """Two jobs of two workers each (four "processes") at a bulk rate twice the limit: the
    window alone keeps every second as the stand-in counts it within the limit. Before the
    window: the stand-in refuses about half of them."""
    recipients = Recipients(redis_client, settings.state.state_key)
    users = range(9000, 9200)
    for user in users:
        await recipients.add(user)
    telegram = FakeTelegram(latency=Latency(0.02, jitter=1.0))
    rates = telegram.enforce_rates(TelegramRates(per_second=LIMIT, chat_burst=10))
    bot = bot_of(settings, telegram)
    limits = SendLimitSettings(_env_file=None, broadcast_rate=2 * LIMIT, broadcast_limit=LIMIT)
    runs = []
    for job_id in ("menu", "news"):
        for _ in range(2):
            limiter = SendLimiter(redis_client, settings.state.state_key, limits)
            worker = Broadcast(bot, recipients, limiter, job_id=job_id, text=job_id)
            runs.append(run_job(worker, job_id, dry_run=False, out=io.StringIO()))
    assert await asyncio.gather(*runs) == [0] * 4
    sent = [call for call in telegram.attempts("sendMessage") if call.ok]
    assert Counter((c.params["text"], c.params["chat_id"]) for c in sent) == Counter(
        (text, user) for text in ("menu", "news") for user in users
    )
    assert rates.refused == 0  # no second over the limit as the stand-in counts them


async def server_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_place_is_held_until_a_second_after_the_answer(
    settings: Settings, redis_client: Redis
) -> None:
    """The window's script on a real Redis: a place taken is held for its lease (a send
    never answered), a place freed one second from then; a full window answers the wait
    until its first place frees, and takes no place meanwhile; the outcome's record frees
    the send's place in the same call; the place comes with the chat's turn."""
    limits = SendLimitSettings(_env_file=None, broadcast_limit=2)
    limiter = SendLimiter(redis_client, settings.state.state_key, limits)
    window = BulkWindow(redis_client, limiter)
    assert window.folded
    assert window.key.startswith(limiter.bulk_key)  # the {bulk} slot
    before = await server_ms(redis_client)
    first, second = await window.take(7001), await window.take(7002)
    after = await server_ms(redis_client)
    for place in (first, second):
        held = await redis_client.zscore(window.key, place)
        assert held is not None
        assert before + LEASE_MS <= held <= after + LEASE_MS
    # The chat's turn was reserved by the same script: the chat's budget key exists.
    assert await redis_client.exists(limiter.chat_key(7001))
    take = redis_client.register_script(TAKE_SCRIPT)
    wait = await take(keys=[window.key], args=[2, "third"])
    assert 0 < wait <= LEASE_MS
    assert await redis_client.zscore(window.key, "third") is None
    before = await server_ms(redis_client)
    await window.free(first)
    after = await server_ms(redis_client)
    freed = await redis_client.zscore(window.key, first)
    assert freed is not None
    assert before + HOLD_MS <= freed <= after + HOLD_MS
    assert 0 < await take(keys=[window.key], args=[2, "third"]) <= HOLD_MS
    # Freed again later (a repeated record), it is not held longer.
    await window.free(first)
    assert await redis_client.zscore(window.key, first) == freed
    # Its second passed: the place is free for the next send.
    await redis_client.zadd(window.key, {first: before - 1})
    assert await take(keys=[window.key], args=[2, "third"]) == 0
    # The outcome's record (FINISH_SCRIPT) frees the send's place in the same call.
    recipients = Recipients(redis_client, settings.state.state_key)
    job = recipients.job_key(recipients.shard_of(7002), "unit")
    await redis_client.hset(job, "7002", CLAIMED)
    finish = redis_client.register_script(FINISH_SCRIPT)
    keys = [job, recipients.blocked_key(recipients.shard_of(7002)), window.key]
    before = await server_ms(redis_client)
    await finish(keys=keys, args=[7002, SENT, second])
    after = await server_ms(redis_client)
    freed = await redis_client.zscore(window.key, second)
    assert freed is not None
    assert before + HOLD_MS <= freed <= after + HOLD_MS
    assert await redis_client.hget(job, "7002") == SENT.encode()


async def script_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


class CountingLimiter(SendLimiter):
    """The real limiter, counting its own script calls (turns asked for outside the window)."""

    bulk_calls = chat_calls = 0

    async def reserve_bulk(self, count: int = 1) -> list[float]:
        self.bulk_calls += 1
        return await super().reserve_bulk(count)

    async def reserve_chat(self, chat_id: int, count: int = 1) -> list[float]:
        self.chat_calls += 1
        return await super().reserve_chat(chat_id, count)


async def test_the_window_costs_no_call_per_send_on_one_redis(
    settings: Settings, redis_client: Redis
) -> None:
    """Each send's place comes with its chat's turn (which `KeepSendRate` then finds taken:
    it asks for none; before the window it asked once per message) and goes with its
    outcome's record: per message two script calls, as before. Per batch of 10: its claim
    and its bulk turns (and a new bulk turn for a send woken late)."""
    recipients = Recipients(redis_client, settings.state.state_key)
    users = range(9500, 9540)
    for user in users:
        await recipients.add(user)
    limits = SendLimitSettings(_env_file=None, broadcast_rate=200, broadcast_limit=1000)
    limiter = CountingLimiter(redis_client, settings.state.state_key, limits)
    bot = bot_of(settings, FakeTelegram(), limiter)
    warm = Broadcast(bot, recipients, limiter, job_id="warm", text=TEXT)  # loads the scripts
    assert await run_job(warm, "warm", dry_run=False, out=io.StringIO()) == 0
    limiter.bulk_calls = limiter.chat_calls = 0
    job = Broadcast(bot, recipients, limiter, job_id="cost", text=TEXT)
    before = await script_calls(redis_client)
    assert await run_job(job, "cost", dry_run=False, out=io.StringIO()) == 0
    calls = await script_calls(redis_client) - before
    per_shard = Counter(recipients.shard_of(user) for user in users)
    claims = sum(-(-count // CLAIM_BATCH) for count in per_shard.values())
    assert limiter.chat_calls == 0
    assert calls == claims + limiter.bulk_calls + 2 * len(users)
    window = BulkWindow(redis_client, limiter)
    now = await server_ms(redis_client)
    # The places not yet past their second: each freed by its record, none left on a lease.
    held = await redis_client.zcard(window.key)
    assert held > 0
    assert await redis_client.zcount(window.key, "-inf", now + HOLD_MS) == held


async def test_on_a_cluster_the_place_is_taken_and_freed_by_calls_of_their_own(
    settings: Settings, redis_client: Redis
) -> None:
    """The window's key is in the {bulk} slot, the chat's and the record's in others: on a
    Redis Cluster (here: a job told so) the place is taken and freed by scripts of their own
    and the chat's turn is asked for by `KeepSendRate`, as before the window."""
    recipients = Recipients(redis_client, settings.state.state_key)
    users = range(9600, 9620)
    for user in users:
        await recipients.add(user)
    limits = SendLimitSettings(_env_file=None, broadcast_rate=200, broadcast_limit=1000)
    limiter = CountingLimiter(redis_client, settings.state.state_key, limits)
    bot = bot_of(settings, FakeTelegram(), limiter)
    job = Broadcast(bot, recipients, limiter, job_id="cluster", text=TEXT)
    job._window.folded = False
    assert await run_job(job, "cluster", dry_run=False, out=io.StringIO()) == 0
    assert limiter.chat_calls == len(users)
    now = await server_ms(redis_client)
    # Taken, and freed by calls of their own: none left on a lease.
    held = await redis_client.zcard(job._window.key)
    assert held > 0
    assert await redis_client.zcount(job._window.key, "-inf", now + HOLD_MS) == held


async def test_a_429_frees_the_place_and_the_retry_takes_a_new_one(
    settings: Settings, redis_client: Redis
) -> None:
    """A send answered 429 (Telegram delivered nothing) frees its place, is waited out with
    the job and takes a new place: none is left held on its lease."""
    recipients = Recipients(redis_client, settings.state.state_key)
    users = range(9700, 9706)
    for user in users:
        await recipients.add(user)
    telegram = FakeTelegram()
    telegram.fail("sendMessage", status=429, retry_after=1, match=lambda p: p["chat_id"] == 9703)
    bot = bot_of(settings, telegram)
    limits = SendLimitSettings(_env_file=None, broadcast_rate=100, broadcast_limit=3)
    limiter = SendLimiter(redis_client, settings.state.state_key, limits)
    job = Broadcast(bot, recipients, limiter, job_id="flood", text=TEXT)
    assert await run_job(job, "flood", dry_run=False, out=io.StringIO()) == 0
    attempts = [c.ok for c in telegram.attempts("sendMessage") if c.params["chat_id"] == 9703]
    assert attempts == [False, True]
    now = await server_ms(redis_client)
    key = BulkWindow(redis_client, limiter).key
    held = await redis_client.zcard(key)
    assert held > 0
    assert await redis_client.zcount(key, "-inf", now + HOLD_MS) == held
