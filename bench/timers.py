"""The timers run (`python bench/run.py --timers USERS`): what pending cart timers cost.

In one worker process, on the baked bot's own nodes with its `run_timers` loop running as in
production, and a clock the run moves forward (`create_nodes(clock=...)`, as the test client
does) so nothing waits 30 minutes:

1. memory: USERS users are put in the cart (`Hungry` with two items: a reminder and an expiry
   pending each); Redis `used_memory` before and after, `MEMORY USAGE` of the timer schedule
   (the sharded sorted sets) and of user values with and without their pending timers;
2. firing throughput: the clock jumps past CART_REMINDER_AFTER, so every reminder falls due at
   once; timers fired per second by `run_timers` until each user got their reminder (once);
3. lateness under traffic: up to `LATENESS_USERS` more users enter the cart, paced so that
   their reminders fall due at `LATENESS_LOAD` of the firing throughput just measured (a normal
   load, not a backlog), and the clock is set so they fall due over the next seconds, while
   other users walk the whole flow at `in_flight` updates at once; the firing lateness (what the
   bot's metric reports) p50 / p99 / max of those reminders.

What timers cost per ordinary update is measured by the usual throughput workers (run.py),
with timers on, with both cart timers off, and the version before (`--baseline`).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .flows import FLOW, Variant, expected_first_flow, make_update
from .redis_client import read_commandstats, reset_commandstats

#: What every user's cart holds: two items, as a user who stopped after choosing a little.
CART = ("Pizza", "Soup")
REMINDER_PREFIX = "Still hungry?"
#: The lateness phase: this many users (at most USERS), their reminders falling due at this
#: share of the measured firing throughput, over at least / at most this many seconds.
LATENESS_USERS = 2000
LATENESS_LOAD = 0.25
LATENESS_SPREAD_S = (5.0, 30.0)
#: A phase that has not seen every timer fire after this long is reported, not waited for.
PHASE_TIMEOUT_S = 600.0


class MovableClock:
    """The wall clock plus an offset the run moves forward: timers fall due without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def timer_recorder() -> Any:
    """A `NodesObserver` (of the bake's botnodes) that keeps every firing's timer and lateness."""
    base = importlib.import_module("botnodes").NodesObserver

    class Recorder(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.fired: list[tuple[str, float]] = []
            self.scheduled = 0

        def timer_fired(self, node: str, name: str, lateness: float) -> None:
            self.fired.append((name, lateness))

        def timer_scheduled(self, node: str, name: str) -> None:
            self.scheduled += 1

    return Recorder()


async def _gather_limited(calls: list[Callable[[], Any]], in_flight: int) -> list[str]:
    """Run the calls with at most `in_flight` at once; the errors they raised, as text."""
    slots = asyncio.Semaphore(in_flight)
    errors: list[str] = []

    async def one(call: Callable[[], Any]) -> None:
        async with slots:
            try:
                await call()
            except Exception as error:
                errors.append(f"{type(error).__name__}: {error}")

    await asyncio.gather(*(one(call) for call in calls))
    return errors


async def _until_fired(recorder: Any, count: int, timeout: float) -> float:
    """Wait until `count` firings were recorded (or `timeout`); the seconds it took."""
    began = time.perf_counter()
    while len(recorder.fired) < count and time.perf_counter() - began < timeout:
        await asyncio.sleep(0.005)
    return time.perf_counter() - began


async def _until_sent(variant: Variant, users: range, timeout: float) -> None:
    """Wait until each of `users` was sent a reminder (or `timeout`)."""
    texts = variant.session.telegram.texts
    began = time.perf_counter()
    while time.perf_counter() - began < timeout and not all(
        any(text.startswith(REMINDER_PREFIX) for text in texts.get(uid, [])) for uid in users
    ):
        await asyncio.sleep(0.005)


def _reminded_once(variant: Variant, users: range) -> int:
    """How many of `users` got exactly one reminder."""
    texts = variant.session.telegram.texts
    return sum(
        sum(text.startswith(REMINDER_PREFIX) for text in texts.get(uid, [])) == 1 for uid in users
    )


async def _schedule_size(variant: Variant, nodes: Any) -> tuple[int, int]:
    """Entries in the timer schedule and its `MEMORY USAGE` in bytes, every shard."""
    redis = variant.redis
    schedule = nodes._timers  # read on purpose: the shard keys are where the timers live
    shards = [schedule.shard_key(n) for n in range(schedule._shards)]
    entries = sum([await redis.zcard(key) for key in shards])
    return entries, sum([await redis.memory_usage(key) or 0 for key in shards])


async def _memory(
    variant: Variant, nodes: Any, prefix: str, users: range, held: tuple[int, int]
) -> dict[str, Any]:
    """Schedule size and the bytes pending timers add to a user's value (a sample of users).

    `held` is the schedule's size before `users` were placed: the warm-up's users left their
    entries (the schedule is lazy: leaving the cart does not remove them, their look does).
    """
    redis = variant.redis
    entries, size = await _schedule_size(variant, nodes)
    scheduled, schedule_bytes = entries - held[0], size - held[1]
    with_timers: list[int] = []
    without: list[int] = []
    value_growth: list[int] = []
    scratch = f"{prefix}:bench-scratch"
    for uid in users[:: max(len(users) // 100, 1)]:
        key = f"{prefix}:{{{uid}}}"
        raw = await redis.get(key)
        stored = json.loads(raw)
        stored.pop("_t")  # the pending timers (codec.TIMERS_FIELD); KeyError: none stored
        bare = json.dumps(stored, separators=(",", ":"))
        await redis.set(scratch, bare)
        with_timers.append(await redis.memory_usage(key) or 0)
        without.append(await redis.memory_usage(scratch) or 0)
        value_growth.append(len(raw) - len(bare.encode()))
    await redis.delete(scratch)
    return {
        "users_in_schedule": scheduled,
        "schedule_bytes_per_user": schedule_bytes / len(users),
        "user_key_bytes_with_timers": statistics.fmean(with_timers),
        "user_key_bytes_without_timers": statistics.fmean(without),
        "value_bytes_of_timers": statistics.fmean(value_growth),
    }


async def _traffic(variant: Variant, first_user: int, in_flight: int, stop: asyncio.Event) -> Any:
    """Users walk the whole flow, `in_flight` updates at once, until `stop`; (updates, users)."""
    next_user = iter(range(first_user, first_user + 10_000_000))
    updates = 0
    finished: list[int] = []
    errors: list[str] = []

    async def lane() -> None:
        nonlocal updates
        while not stop.is_set():
            uid = next(next_user)
            for text in FLOW:
                try:
                    await variant.feed(make_update(variant.bot, uid, text))
                except Exception as error:
                    errors.append(f"{type(error).__name__}: {error}")
                updates += 1
            finished.append(uid)

    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return updates, finished, errors


async def run(
    variant: Variant, recorder: Any, clock: MovableClock, options: dict[str, Any]
) -> dict[str, Any]:
    """The three phases above; every figure of the timers report, as a dict.

    `variant` is the botnodes variant built with `recorder` as its observer and `clock`.
    """
    users, in_flight, first = options["users"], options["in_flight"], options["first_user"]
    nodes = variant.handles["nodes"]
    settings = variant.handles["settings"].cart
    reminder_after = settings.cart_reminder_after.total_seconds()
    hungry = importlib.import_module(f"{options['package']}.nodes").Hungry
    prefix = variant.info["prefix"]
    timers = asyncio.create_task(nodes.run_timers())
    try:
        # 1. Every user in the cart: two timers pending each.
        placed = range(first, first + users)
        held = await _schedule_size(variant, nodes)
        memory_before = int((await variant.redis.info("memory"))["used_memory"])
        began = time.perf_counter()
        errors = await _gather_limited(
            [lambda uid=uid: nodes.user(uid).to(hungry(list(CART))) for uid in placed], in_flight
        )
        placing_s = time.perf_counter() - began
        memory_after = int((await variant.redis.info("memory"))["used_memory"])
        memory = await _memory(variant, nodes, prefix, placed, held)
        variant.session.telegram.forget()

        # 2. All reminders due at once.
        recorder.fired.clear()
        await reset_commandstats(variant.redis)
        clock.offset += reminder_after + 1
        firing_s = await _until_fired(recorder, users, PHASE_TIMEOUT_S)
        await _until_sent(variant, placed, PHASE_TIMEOUT_S)
        await asyncio.sleep(2 * nodes._timer_loop.poll_interval)  # a second firing would show now
        stats = await read_commandstats(variant.redis)
        fired = Counter(name for name, _ in recorder.fired)
        reminded_once = _reminded_once(variant, placed)
        variant.session.telegram.forget()

        # 3. Reminders falling due one by one while other users walk the flow.
        fired_per_s = fired["reminder"] / firing_s
        shortest, longest = LATENESS_SPREAD_S
        count = min(users, LATENESS_USERS, math.ceil(fired_per_s * LATENESS_LOAD * longest))
        lateness_users = range(first + users, first + users + count)
        spread = max(shortest, count / (fired_per_s * LATENESS_LOAD))
        recorder.fired.clear()
        start = time.monotonic()
        pace = spread / len(lateness_users)

        async def place_paced(n: int, uid: int) -> None:
            await asyncio.sleep(max(0.0, start + n * pace - time.monotonic()))
            await nodes.user(uid).to(hungry(list(CART)))

        await asyncio.gather(*(place_paced(n, uid) for n, uid in enumerate(lateness_users)))
        stop = asyncio.Event()
        traffic = asyncio.create_task(
            _traffic(variant, first + 2 * users + LATENESS_USERS, in_flight, stop)
        )
        await asyncio.sleep(0.5)  # the traffic is under way before the first reminder is due
        traffic_began = time.perf_counter()
        # The first placed reminder falls due in a second, the last `spread` seconds after.
        clock.offset += reminder_after - (time.monotonic() - start) - 1
        await _until_fired(recorder, len(lateness_users), PHASE_TIMEOUT_S)
        # A firing is recorded before its reply goes out: wait for the replies, then as long
        # again as in phase 2 for a second firing to show.
        await _until_sent(variant, lateness_users, PHASE_TIMEOUT_S)
        await asyncio.sleep(2 * nodes._timer_loop.poll_interval)
        stop.set()
        updates, finished, traffic_errors = await traffic
        traffic_s = time.perf_counter() - traffic_began
        lateness = sorted(late for name, late in recorder.fired if name == "reminder")
        sent = variant.session.telegram.texts
        wrong = sum(sent.get(uid) != expected_first_flow(uid) for uid in finished)
        lateness_reminded_once = _reminded_once(variant, lateness_users)
        variant.session.telegram.forget()
    finally:
        timers.cancel()
        await asyncio.gather(timers, return_exceptions=True)
    cuts = statistics.quantiles(lateness, n=100, method="inclusive") if len(lateness) > 1 else []
    return {
        "users": users,
        "timers_per_user": 2,
        "placing_s": placing_s,
        "placing_errors": len(errors),
        "first_error": errors[0] if errors else None,
        "used_memory_per_user": (memory_after - memory_before) / users,
        **memory,
        "fired": dict(fired),
        "reminded_once": reminded_once,
        "firing_s": firing_s,
        "fired_per_s": fired_per_s,
        "commands_per_firing": sum(stats.values()) / max(fired["reminder"], 1),
        "lateness_users": len(lateness_users),
        "lateness_due_per_s": len(lateness_users) / spread,
        "lateness_load": LATENESS_LOAD,
        "lateness_fired": len(lateness),
        "lateness_reminded_once": lateness_reminded_once,
        "lateness_p50_s": cuts[49] if cuts else float("nan"),
        "lateness_p99_s": cuts[98] if cuts else float("nan"),
        "lateness_max_s": lateness[-1] if lateness else float("nan"),
        "poll_interval_s": nodes._timer_loop.poll_interval,
        "traffic_updates": updates,
        "traffic_updates_per_s": updates / traffic_s,
        "traffic_users_finished": len(finished),
        "traffic_users_with_wrong_replies": wrong,
        "traffic_errors": len(traffic_errors),
    }
