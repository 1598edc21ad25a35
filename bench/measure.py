"""The three measurements, each run against one `Variant` inside one worker process.

* throughput: many users, each walking the flow one update at a time, with at most
  `in_flight` updates inside `Dispatcher.feed_update` at once (what aiogram's polling
  `tasks_concurrency_limit` does); Redis counters are reset right before it.
* latency: one user sending sequentially; every `feed_update` is timed, and the round trips
  and Redis commands of that lone user are counted (Redis counters reset right before).
* burst: one user sends 50 items at once; how long until all are handled, and how many
  of them are in the cart afterwards (a missing item is a lost update).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import time
from pathlib import Path
from typing import Any

from .flows import FLOW, Variant, expected_first_flow, make_update, ordering
from .redis_client import WIRE, read_commandstats, reset_commandstats, warm_pool

BURST_PREFIX = "burst-item-"


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS since the last `reset_peak_rss`) in MiB, from /proc/self/status."""
    values: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak_rss() -> None:
    """Make VmHWM start again from the current RSS (Linux: `echo 5 > /proc/self/clear_refs`)."""
    # Not Linux, or not allowed: the peak then includes start-up, which the report says.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


async def _feed_checked(variant: Variant, update: Any, errors: list[str]) -> None:
    try:
        await variant.feed(update)
    except Exception as error:  # an update that raised is reported, not hidden
        errors.append(f"{type(error).__name__}: {error}")


async def warm_up(variant: Variant, users: range, pool_size: int) -> None:
    """Open every pool connection and run a few flows: imports, caches and scripts get loaded."""
    await warm_pool(variant.redis, pool_size)
    errors: list[str] = []
    await asyncio.gather(*(_walk(variant, uid, errors, None) for uid in users))
    if errors:
        raise RuntimeError(f"{variant.name}: warm-up failed: {errors[0]}")
    variant.session.telegram.forget()


async def _walk(
    variant: Variant, user_id: int, errors: list[str], slots: asyncio.Semaphore | None
) -> None:
    for text in FLOW:
        update = make_update(variant.bot, user_id, text)
        if slots is None:
            await _feed_checked(variant, update, errors)
        else:
            async with slots:
                await _feed_checked(variant, update, errors)


async def throughput(variant: Variant, users: range, in_flight: int) -> dict[str, Any]:
    """Updates/s for `users` walking the flow, plus the Redis cost per update."""
    slots = asyncio.Semaphore(in_flight)
    errors: list[str] = []
    await reset_commandstats(variant.redis)
    WIRE.reset()
    reset_peak_rss()
    rss_before, _ = rss_mb()
    started = time.perf_counter()
    await asyncio.gather(*(_walk(variant, uid, errors, slots) for uid in users))
    elapsed = time.perf_counter() - started
    round_trips, commands_sent = WIRE.round_trips, WIRE.commands
    _, peak = rss_mb()
    stats = await read_commandstats(variant.redis)
    updates = len(users) * len(FLOW)
    sent = variant.session.telegram.texts
    wrong = sum(sent.get(uid) != expected_first_flow(uid) for uid in users)
    variant.session.telegram.forget()
    server_commands = sum(stats.values())
    return {
        "updates": updates,
        "seconds": elapsed,
        "updates_per_s": updates / elapsed,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "users_with_wrong_replies": wrong,
        "round_trips_per_update": round_trips / updates,
        "client_commands_per_update": commands_sent / updates,
        "server_commands_per_update": server_commands / updates,
        "commandstats": stats,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak,
    }


async def latency(variant: Variant, user_id: int, flows: int) -> dict[str, Any]:
    """p50/p99 of single updates of one user who always waits for the previous one."""
    errors: list[str] = []
    await _walk(variant, user_id, errors, None)  # first contact; the repeats start from the menu
    # One user alone shares no batch with anybody: what their updates cost in round trips
    # (the "2 per update, lock included" promise) and in commands, without concurrency.
    await reset_commandstats(variant.redis)
    WIRE.reset()
    samples: list[float] = []
    for _ in range(flows):
        for text in FLOW:
            update = make_update(variant.bot, user_id, text)
            started = time.perf_counter()
            await _feed_checked(variant, update, errors)
            samples.append(time.perf_counter() - started)
    round_trips = WIRE.round_trips
    stats = await read_commandstats(variant.redis)
    variant.session.telegram.forget()
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "samples": len(samples),
        "round_trips_per_update": round_trips / len(samples),
        "server_commands_per_update": sum(stats.values()) / len(samples),
        "commandstats": stats,
        "errors": len(errors),
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "mean_ms": statistics.fmean(samples) * 1000,
    }


async def burst(variant: Variant, user_id: int, size: int) -> dict[str, Any]:
    """One user in the cart sends `size` items at once; count what survived and time the drain."""
    errors: list[str] = []
    for text in ("hi", "Yes"):
        await _feed_checked(variant, make_update(variant.bot, user_id, text), errors)
    items = [f"{BURST_PREFIX}{n}" for n in range(size)]
    updates = [make_update(variant.bot, user_id, item) for item in items]
    started = time.perf_counter()
    await asyncio.gather(*(_feed_checked(variant, update, errors) for update in updates))
    drain = time.perf_counter() - started
    before_finish = len(variant.session.telegram.texts.get(user_id, []))
    await _feed_checked(variant, make_update(variant.bot, user_id, "Finish"), errors)
    replies = variant.session.telegram.texts.get(user_id, [])[before_finish:]
    prefix = ordering([])
    cart: list[str] = []
    for reply in replies:
        if reply.startswith(prefix) and reply != prefix.rstrip():
            cart = reply.removeprefix(prefix).split(", ")
            break
    kept = [item for item in cart if item.startswith(BURST_PREFIX)]
    variant.session.telegram.forget()
    return {
        "size": size,
        "drain_s": drain,
        "lost": size - len(set(kept)),
        "in_order": kept == items,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


async def used_memory(variant: Variant) -> int:
    """Redis's `used_memory`: meaningful per user only over many users (buffers move it)."""
    info = await variant.redis.info("memory")
    return int(info["used_memory"])


async def sampled_key_bytes(variant: Variant, keys: list[str]) -> float:
    """Mean `MEMORY USAGE` of some users' state keys: the per-user cost without the noise."""
    sizes = [await variant.redis.memory_usage(key) or 0 for key in keys]
    return sum(sizes) / len(sizes)


async def _batch(
    variant: Variant, users: range, errors: list[str], slots: asyncio.Semaphore
) -> float:
    """Walk `users` through the flow; updates/s. (Its own frame: nothing outlives the batch.)"""
    began = time.perf_counter()
    await asyncio.gather(*(_walk(variant, uid, errors, slots) for uid in users))
    return len(users) * len(FLOW) / (time.perf_counter() - began)


async def scale(variant: Variant, first_user: int, users: int, in_flight: int) -> dict[str, Any]:
    """`users` distinct users walk the flow, 1,000 at a time with `in_flight` updates at once.

    Reports updates/s of the first and the last batch, Redis memory per stored user, the
    worker's RSS, and what the in-process structures hold once every user is idle.
    """
    batch = 1000
    errors: list[str] = []
    slots = asyncio.Semaphore(in_flight)
    gc.collect()
    rss_before, _ = rss_mb()
    memory_before = await used_memory(variant)
    objects_before = len(gc.get_objects())

    rates: list[float] = []
    for start in range(0, users, batch):
        ids = range(first_user + start, first_user + min(start + batch, users))
        rates.append(await _batch(variant, ids, errors, slots))
        variant.session.telegram.forget()  # the harness's own record of replies must not grow
    rss_after, _ = rss_mb()
    gc.collect()
    rss_after_gc, _ = rss_mb()
    memory_after = await used_memory(variant)
    sample = [
        f"{variant.info.get('prefix', '')}:{{{first_user + n}}}"
        for n in range(0, users, max(users // 100, 1))
    ]
    return {
        "sampled_state_key_bytes": await sampled_key_bytes(variant, sample),
        "users": users,
        "batches": len(rates),
        "first_batch_updates_per_s": rates[0],
        "last_batch_updates_per_s": rates[-1],
        "redis_bytes_per_user": (memory_after - memory_before) / users,
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "rss_after_gc_mb": rss_after_gc,
        "gc_objects_per_user": (len(gc.get_objects()) - objects_before) / users,
        "structures_when_idle": variant.probe(),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }
