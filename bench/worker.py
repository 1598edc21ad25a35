"""One benchmark run of one variant, in its own process, printed as one JSON object.

Each run gets a fresh interpreter so peak RSS belongs to one variant only and no variant
inherits another's warm caches; `run.py` alternates these processes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import platform
import sys
from typing import Any

from . import measure, timers
from .flows import VARIANTS, build_botnodes, build_variant, load_fake_bot_api
from .redis_client import create_client

#: User id ranges per phase, so no phase finds another phase's state.
WARM_UP_BASE, THROUGHPUT_BASE, LATENCY_USER, BURST_USER = 1_000_000, 2_000_000, 3_000_001, 4_000_001
SCALE_BASE = 10_000_000
TIMERS_BASE = 20_000_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--package", required=True, help="the baked bot's package name")
    parser.add_argument("--prefix", required=True, help="key prefix, unique per run")
    parser.add_argument(
        "--fake-bot-api", required=True, help="path of the bake's botnodes/testing/fake_bot_api/"
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--latency-flows", type=int, default=100)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave the start-up objects in the collected generations (see README)",
    )
    parser.add_argument(
        "--scale", type=int, metavar="USERS", help="only the scale run, with this many users"
    )
    parser.add_argument(
        "--timers",
        type=int,
        metavar="USERS",
        help="only the timers run (bench/timers.py), with this many users in the cart",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="profile the throughput phase into this file: .html or .txt with pyinstrument "
        "(the call tree), .prof with cProfile (self time per function, which the tree hides)",
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_fake_bot_api(args.fake_bot_api)
    redis = create_client(args.redis_url, max_connections=args.in_flight)
    if args.timers:
        recorder, clock = timers.timer_recorder(), timers.MovableClock()
        variant = build_botnodes(redis, args.prefix, args.package, observer=recorder, clock=clock)
    else:
        variant = build_variant(args.variant, redis, args.prefix, args.package)
    try:
        await measure.warm_up(variant, range(WARM_UP_BASE, WARM_UP_BASE + 20), args.in_flight)
        if not args.no_gc_freeze:
            # What a long-running bot does once it is built: move the ~200k start-up objects
            # (aiogram's and pydantic's types, schemas, routers) out of the collector's
            # reach. Without it every full collection walks them all and costs ~0.2 s.
            gc.collect()
            gc.freeze()
        if args.timers:
            options = {
                "users": args.timers,
                "in_flight": args.in_flight,
                "first_user": TIMERS_BASE,
                "package": args.package,
            }
            return {
                "variant": variant.name,
                "timers": await timers.run(variant, recorder, clock, options),
            }
        if args.scale:
            return {
                "variant": variant.name,
                "scale": await measure.scale(variant, SCALE_BASE, args.scale, args.in_flight),
            }
        users = range(THROUGHPUT_BASE, THROUGHPUT_BASE + args.users)
        if args.profile:
            throughput = await _profiled_throughput(variant, users, args.in_flight, args.profile)
        else:
            throughput = await measure.throughput(variant, users, args.in_flight)
        latency = await measure.latency(variant, LATENCY_USER, args.latency_flows)
        burst = await measure.burst(variant, BURST_USER, args.burst)
        _, peak_total = measure.rss_mb()
        return {
            "variant": variant.name,
            "info": variant.info,
            "throughput": throughput,
            "latency": latency,
            "burst": burst,
            "peak_rss_mb": throughput["peak_rss_mb"],
            "python": platform.python_version(),
            "versions": {
                name: importlib.metadata.version(name) for name in ("aiogram", "redis", "pydantic")
            },
            "peak_rss_end_mb": peak_total,
            "gc_freeze": not args.no_gc_freeze,
        }
    finally:
        await variant.close()
        await redis.aclose()


async def _profiled_throughput(
    variant: Any, users: range, in_flight: int, path: str
) -> dict[str, Any]:
    """The throughput run under a profiler (its figures are the profiler's, not the bot's)."""
    if path.endswith(".prof"):
        import cProfile

        with cProfile.Profile() as profile:
            throughput = await measure.throughput(variant, users, in_flight)
        profile.dump_stats(path)
        return throughput
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="enabled")
    profiler.start()
    throughput = await measure.throughput(variant, users, in_flight)
    profiler.stop()
    if path.endswith(".html"):
        profiler.write_html(path)
    else:
        with open(path, "w", encoding="utf-8") as out:
            out.write(profiler.output_text(unicode=True, show_all=False))
    return throughput


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
