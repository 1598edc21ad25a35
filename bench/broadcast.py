"""Broadcast benchmark: `python bench/broadcast.py [--users 10000] [--limit 30] [--latency MS]`.

Bakes the template, starts a private `redis-server` and the bake's own Bot API stand-in over
HTTP with Telegram's rates enforced (`--limit` messages per second overall, per-chat buckets;
the bot's BROADCAST_LIMIT too; `--latency` a network delay each way of a call, jittered by
+-50 %, so sends started evenly arrive bunched),
registers `--users` users (1 % of them blocked), then runs `python -m <package> broadcast` as
two processes on one job, SIGKILLs one of them after `--kill-at` of the users got the message
and starts it again, as an operator would. Prints the achieved rate as a fraction of the
limit (over the time from the first to the last delivery), the 429s the stand-in answered,
the users who got the message twice (the goal for both: 0), and those left unconfirmed by
the kill (at most once: not sent again).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as `python bench/broadcast.py`
    sys.path.insert(0, str(REPO_ROOT))

from bench.run import bake, redis_server  # noqa: E402

TOKEN = "123456:BENCH-broadcast-token"
TEXT = "Our winter menu is out!"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000, help="registered users")
    parser.add_argument("--limit", type=int, default=30, help="the stand-in's messages/s")
    parser.add_argument(
        "--rate", type=float, default=29.0, help="BROADCAST_RATE of the bot (messages/s)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="the stand-in's delay each way (ms, +-50 %%)"
    )
    parser.add_argument(
        "--kill-at", type=float, default=0.3, help="share delivered when one process is killed"
    )
    parser.add_argument("--template", type=Path, default=REPO_ROOT)
    parser.add_argument("--redis-server", default="redis-server")
    return parser.parse_args(argv)


def delivered(telegram: Any) -> Counter[int]:
    return Counter(
        int(call.params["chat_id"])
        for call in telegram.calls
        if call.ok and call.method == "sendMessage" and call.params.get("text") == TEXT
    )


async def register(redis_url: str, users: int) -> set[int]:
    """Users 1..N in the bake's registry; every 100th blocked. Returns the blocked ones."""
    recipients_module = importlib.import_module("botnodes.telegram.recipients")
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    recipients = recipients_module.Recipients(redis, "bench")
    blocked = set(range(100, users + 1, 100))
    async with redis.pipeline(transaction=False) as pipe:
        for user in range(1, users + 1):
            pipe.sadd(recipients.shard_key(recipients.shard_of(user)), user)
        for user in blocked:
            pipe.sadd(recipients.blocked_key(recipients.shard_of(user)), user)
        await pipe.execute()
    await redis.aclose()
    return blocked


async def run(args: argparse.Namespace, project: Path, redis_url: str) -> dict[str, Any]:
    package = next(p.parent.name for p in project.glob("*/__main__.py"))
    sys.path.insert(0, str(project))
    fake = importlib.import_module("botnodes.testing.fake_bot_api")
    server = fake.FakeBotAPIServer(TOKEN)
    await server.start()
    rates = server.telegram.enforce_rates(fake.TelegramRates(per_second=args.limit))
    if args.latency > 0:
        server.telegram.latency = fake.Latency(args.latency / 1000)
    blocked = await register(redis_url, args.users)
    env = {
        **os.environ,
        "PYTHONPATH": str(project),
        "BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": server.url,
        "REDIS_URL": redis_url,
        "STATE_KEY": "bench",
        "BROADCAST_RATE": str(args.rate),
        "BROADCAST_LIMIT": str(args.limit),
    }
    command = [sys.executable, "-m", package, "broadcast", "--id", "bench", "--text", TEXT]

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *command, env=env, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )

    samples: list[tuple[float, int]] = []

    async def sample() -> None:
        # Counted as calls come (not over all calls each time): the stand-in shares this
        # event loop, and a slow sampler would bunch its answers.
        seen = ok = 0
        while True:
            calls = server.telegram.calls
            ok += sum(1 for c in calls[seen:] if c.ok and c.method == "sendMessage")
            seen = len(calls)
            samples.append((time.monotonic(), ok))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    first, second = await start(), await start()
    reachable = args.users - len(blocked)
    while not samples or samples[-1][1] < args.kill_at * reachable:
        await asyncio.sleep(0.2)
    second.send_signal(signal.SIGKILL)
    await second.wait()
    resumed = await start()
    outputs = [(await process.communicate())[0].decode() for process in (first, resumed)]
    sampler.cancel()
    await server.close()
    got = delivered(server.telegram)
    final = samples[-1][1]
    first_at = next(at for at, count in samples if count > 0)
    last_at = next(at for at, count in samples if count == final)
    return {
        "rate": (final - 1) / max(last_at - first_at, 1e-9),
        "got": got,
        "blocked": blocked,
        "refused": rates.refused,
        "outputs": outputs,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-broadcast-") as tmp:
        project = bake(args.template, Path(tmp))
        with redis_server(args.redis_server, Path(tmp)) as url:
            started = time.monotonic()
            result = asyncio.run(run(args, project, url))
            wall = time.monotonic() - started
    got: Counter[int] = result["got"]
    print(
        f"users {args.users}, blocked {len(result['blocked'])}, limit {args.limit}/s, "
        f"BROADCAST_RATE {args.rate}, latency {args.latency:g} ms, wall {wall:.0f}s"
    )
    for output in result["outputs"]:
        print(output.strip().splitlines()[-1] if output.strip() else "(no output)")
    duplicates = sum(1 for n in got.values() if n > 1)
    rate = result["rate"]
    print(
        f"delivered {len(got)}, achieved {rate:.2f}/s = {rate / args.limit:.3f} of the limit, "
        f"429s {result['refused']}, duplicates {duplicates}, "
        f"not delivered (unconfirmed at the kill) "
        f"{args.users - len(result['blocked']) - len(got)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
