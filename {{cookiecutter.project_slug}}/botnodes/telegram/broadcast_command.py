"""The `broadcast` command around a job (broadcast.py): a dry run, the progress bar, Ctrl-C and
SIGTERM, the summary line and the exit status, and the bot's parts the job needs.

Kept apart from the job so the job's rules (once per user, the pace, the outcomes) read alone,
and tests can run a job with parts of their own (`run_job`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from redis.exceptions import RedisError

from .app import App
from .broadcast import Broadcast
from .broadcast_report import Counts, Progress
from .definition import BotDefinition
from .polling import serve_metrics
from .send_limits import SendLimiter
from .settings import BotSettings

#: Seconds without news after which claims of other processes count as unconfirmed.
SETTLE_SECONDS = 5.0
#: Seconds a stopped job (SIGTERM, Ctrl-C) waits for its last outcomes to be recorded: a Redis
#: that does not answer then does not hold the process up.
STOP_GRACE = 5.0
#: Seconds the job's cut sends get to unwind.
CANCEL_GRACE = 0.2


async def settled(job: Broadcast, progress: Progress) -> Counts:
    """The job's counts once other processes' sends are confirmed too, or stopped moving.

    Claims that stay unconfirmed for `SETTLE_SECONDS` belong to a process that died (or
    to one still waiting out a long flood control): they are reported as unconfirmed.
    """
    counts = await job.patiently(job.counts)
    still = time.monotonic()
    while counts.claimed and time.monotonic() - still < SETTLE_SECONDS:
        await asyncio.sleep(0.2)
        latest = await job.patiently(job.counts)
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
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, job.stop)
    try:
        progress = Progress(job_id, await job.patiently(job.total))
        worker = asyncio.create_task(job.run())
        while not worker.done():
            if job.stopped:  # no progress lines: wait for the sends, up to STOP_GRACE
                await asyncio.wait([worker], timeout=job.stopped_at + STOP_GRACE - loop.time())
                if not worker.done():
                    worker.cancel()
                    await asyncio.wait([worker], timeout=CANCEL_GRACE)
                    return _cut(job, job_id, out)
                break
            with contextlib.suppress(RedisError, OSError):  # Redis away: no line this time
                async with asyncio.timeout(1.0):
                    progress.show(await job.counts())
            await asyncio.wait([worker], timeout=1.0)
        await worker
        if job.redis_failure is not None:  # a send's call ran out of patience: the job stopped
            raise job.redis_failure
    except (RedisError, OSError) as error:  # away longer than BROADCAST_REDIS_PATIENCE
        print(
            f"Broadcast {job_id}: stopped, {error}{_unrecorded(job)}; "
            "run the same command again to resume (nobody is sent the job twice)",
            file=out,
        )
        return 1
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    try:
        async with asyncio.timeout_at(job.stopped_at + STOP_GRACE if job.stopped else None):
            counts = await settled(job, progress)
    except TimeoutError:
        return _cut(job, job_id, out)
    except (RedisError, OSError) as error:
        print(f"Broadcast {job_id}: no summary, {error}", file=out)
        return 1
    progress.show(counts, final=True)
    print(counts.summary(job_id), file=out)
    if job.stopped:
        print(f"Stopped: run the same command again to resume {job_id}", file=out)
        return 1
    return 0


def _cut(job: Broadcast, job_id: str, out: TextIO) -> int:
    """Stopped, and Redis did not take the last outcomes within STOP_GRACE: exit anyway."""
    print(
        f"Broadcast {job_id}: cut after {STOP_GRACE:g}s: Redis did not answer{_unrecorded(job)}; "
        "run the same command again to resume (nobody is sent the job twice)",
        file=out,
    )
    return 1


def _unrecorded(job: Broadcast) -> str:
    """Sends whose outcome Redis never took: their users stay claimed, counted unconfirmed."""
    return f", {job.unrecorded} outcome(s) not recorded" if job.unrecorded else ""


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
            redis_patience=settings.send_limits.broadcast_redis_patience,
        )
        return await run_job(job, job_id, dry_run=dry_run, out=sys.stdout)
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        # Closing waits on nothing Redis must answer: a frozen one would hold the exit.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await app.close()
