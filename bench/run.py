"""Benchmark botnodes against aiogram's FSM and a GET+SET floor: `python bench/run.py`.

Bakes the template with cookiecutter's API into a temporary directory (so the generated
bot's own nodes, on its runtime's `create_nodes` and `build_dispatcher`, are what gets
measured), starts a throw-away `redis-server` on a free port, then runs every variant
`--repeats` times, alternating them (the order rotates each round so no variant always runs
first or last), each run in a fresh worker process. Prints medians, ratios and the targets of
issue 5.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, str(REPO_ROOT))

from bench import flows, instructions, report, webhook  # noqa: E402
from bench.flows import VARIANTS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--users", type=int, default=1000, help="users in the throughput run")
    parser.add_argument("--in-flight", type=int, default=100, help="updates in flight at once")
    parser.add_argument(
        "--latency-flows",
        type=int,
        default=100,
        help="flows (8 updates each) the single latency user sends",
    )
    parser.add_argument("--burst", type=int, default=50, help="events in the one-user burst")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--redis-url",
        help="use this Redis instead of starting one; it must be a private, "
        "idle server: the run resets its INFO commandstats",
    )
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--template", type=Path, default=REPO_ROOT)
    parser.add_argument(
        "--scale",
        type=int,
        metavar="USERS",
        help="instead of the comparison: USERS distinct users (e.g. 100000) through the"
        " botnodes bot, 1,000 at a time; growth of memory and in-process structures",
    )
    parser.add_argument(
        "--timers",
        type=int,
        metavar="USERS",
        help="instead of the comparison: USERS users (e.g. 100000) with pending cart timers:"
        " Redis memory per timer, firing throughput, lateness while serving traffic; then"
        " what timers cost per update (timers on, off, and --baseline), --users users each",
    )
    parser.add_argument(
        "--webhook",
        action="store_true",
        help="instead of the comparison: the bot in webhook mode over HTTP on 127.0.0.1,"
        " one replica then two on the same Redis (--users users, --in-flight at once)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of the template (e.g. a `git worktree` of the previous release):"
        " its bot runs as the variant `botnodes-before`, interleaved with the others, so a"
        " change is measured against the version before it in one run",
    )
    parser.add_argument("--json", type=Path, help="write every run's raw figures here")
    parser.add_argument("--markdown", type=Path, help="write the report here")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="instead of benchmarking, profile the first of --variants' throughput run "
        "(botnodes by default) into FILE: .html or text with pyinstrument, .prof with cProfile",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="instead of timing: CPU instructions per update of each variant (and --baseline),"
        " counted by valgrind's callgrind, the same on every run; use a small --users (100)",
    )
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="don't gc.freeze() the start-up objects in the workers (shows what it is worth)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send fd 1 to stderr: cookiecutter's hooks print next steps that don't belong in a report."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def bake(template: Path, output_dir: Path) -> Path:
    """Generate the bot project with the template's defaults; return its directory."""
    from cookiecutter.main import cookiecutter

    output_dir.mkdir(parents=True, exist_ok=True)
    # A private config keeps cookiecutter's replay files out of the user's home.
    config = output_dir / "cookiecutter-config.yaml"
    config.write_text(
        f'cookiecutters_dir: "{output_dir / "cookiecutters"}"\n'
        f'replay_dir: "{output_dir / "replay"}"\n',
        encoding="utf-8",
    )
    with stdout_to_stderr():
        project = cookiecutter(
            str(template),
            no_input=True,
            output_dir=str(output_dir / "baked"),
            config_file=str(config),
        )
    return Path(project)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(executable: str, workdir: Path) -> Iterator[str]:
    """A private redis-server without persistence, stopped on exit; yields its URL."""
    if shutil.which(executable) is None:
        sys.exit(f"redis-server not found ({executable!r}): install it or pass --redis-url")
    port = free_port()
    process = subprocess.Popen(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fake_bot_api(project: Path) -> Path:
    """The bake's Bot API stand-in, which every variant (and a baseline) replies through."""
    return project / "botnodes" / "testing" / "fake_bot_api"


def worker_command(
    args: argparse.Namespace, variant: str, url: str, package: str, run_id: str, project: Path
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.worker",
        "--variant",
        variant,
        "--redis-url",
        url,
        "--package",
        package,
        "--fake-bot-api",
        str(fake_bot_api(project)),
        "--prefix",
        f"bench-{run_id}",
        "--users",
        str(args.users),
        "--in-flight",
        str(args.in_flight),
        "--latency-flows",
        str(args.latency_flows),
        "--burst",
        str(args.burst),
        *(["--no-gc-freeze"] if args.no_gc_freeze else []),
    ]


def worker_env(project: Path, settings: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a worker runs in: `project` and the bench importable, `settings` set."""
    env = {**os.environ, **(settings or {})}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(project), str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


def run_worker(
    command: list[str], project: Path, settings: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one worker with `project` importable and `settings` in its environment."""
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=worker_env(project, settings),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"worker failed ({' '.join(command[3:5])}):\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        total_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {total_kb / 1024 / 1024:.0f} GiB RAM"
    return f"{cpu}, {os.cpu_count()} CPUs{memory}, {platform.system()} {platform.release()}"


def versions(redis_executable: str) -> str:
    parts = [f"Python {platform.python_version()}"]
    for name in ("aiogram", "redis", "pydantic"):
        label = "redis-py" if name == "redis" else name
        parts.append(f"{label} {importlib.metadata.version(name)}")
    with contextlib.suppress(OSError):
        out = subprocess.run(
            [redis_executable, "--version"], capture_output=True, text=True, check=False
        ).stdout
        server = next((w.removeprefix("v=") for w in out.split() if w.startswith("v=")), None)
        if server:
            parts.append(f"redis-server {server}")
    return ", ".join(parts)


BASELINE = "botnodes-before"


def benchmark(
    args: argparse.Namespace, url: str, project: Path, baseline: Path | None = None
) -> list[dict[str, Any]]:
    results = []
    stamp = f"{os.getpid()}-{int(time.time())}"
    variants = [*args.variants, *([BASELINE] if baseline else [])]
    for round_no in range(args.repeats):
        shift = round_no % len(variants)
        order = variants[shift:] + variants[:shift]
        for variant in order:
            # The baseline is the botnodes variant of the other bake.
            runs_as, where = ("botnodes", baseline) if variant == BASELINE else (variant, project)
            assert where is not None
            command = worker_command(
                args, runs_as, url, where.name, f"{stamp}-{round_no}-{variant}", project
            )
            result = run_worker(command, where)
            result["variant"] = variant
            results.append(result)
            if not args.quiet:
                t, b, p50 = result["throughput"], result["burst"], result["latency"]["p50_ms"]
                print(
                    f"[{round_no + 1}/{args.repeats}] {variant:9} "
                    f"{t['updates_per_s']:7.0f} updates/s, p50 {p50:.2f} ms, "
                    f"{t['round_trips_per_update']:.2f} round trips/update, "
                    f"burst lost {b['lost']} in {b['drain_s']:.3f} s",
                    file=sys.stderr,
                )
    return results


#: The cost runs of `--timers`: the bot as shipped, the same bot with both cart timers off (it
#: arms none, as a node without timeouts), and `--baseline`'s bot, with the settings each gets.
TIMER_VARIANTS: dict[str, dict[str, str]] = {
    "timers on": {},
    "timers off": {"CART_REMINDER_AFTER": "0", "CART_EXPIRES_AFTER": "0"},
    BASELINE: {},
}


def run_timers_bench(
    args: argparse.Namespace, url: str, project: Path, baseline: Path | None
) -> str:
    """The timers run, then timers on / off / before interleaved; the report as Markdown."""
    stamp = f"{os.getpid()}-{int(time.time())}"
    command = worker_command(args, "botnodes", url, project.name, f"timers-{stamp}", project)
    result = run_worker([*command, "--timers", str(args.timers)], project)["timers"]
    variants = [v for v in TIMER_VARIANTS if v != BASELINE or baseline is not None]
    costs: list[dict[str, Any]] = []
    for round_no in range(args.repeats):
        shift = round_no % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            where = baseline if variant == BASELINE else project
            assert where is not None
            run_id = f"{stamp}-{round_no}-{variant.replace(' ', '-')}"
            command = worker_command(args, "botnodes", url, where.name, run_id, project)
            cost = run_worker(command, where, TIMER_VARIANTS[variant])
            cost["variant"] = variant
            costs.append(cost)
    return report.render_timers(result, costs, machine(), versions(args.redis_server))


def run_webhook_bench(args: argparse.Namespace, url: str, project: Path) -> str:
    """One replica, then two, each through the whole flow; the report as Markdown."""
    flows.load_fake_bot_api(str(fake_bot_api(project)))
    results = [
        asyncio.run(
            webhook.run(flows.FAKE_BOT_API, project, url, args.users, args.in_flight, count)
        )
        for count in (1, 2)
    ]
    return webhook.render(results)


def run_instructions_bench(
    args: argparse.Namespace, url: str, project: Path, baseline: Path | None
) -> str:
    """Every variant (and the baseline) under callgrind; the report as Markdown."""
    stamp = f"{os.getpid()}-{int(time.time())}"
    # The latency and burst phases cancel out between the two runs: keep them short.
    quick = argparse.Namespace(**{**vars(args), "latency_flows": 1, "burst": 2})

    def prepare(variant: str, users: int) -> tuple[list[str], dict[str, str]]:
        runs_as, where = ("botnodes", baseline) if variant == BASELINE else (variant, project)
        assert where is not None
        sized = argparse.Namespace(**{**vars(quick), "users": users})
        run_id = f"cg-{stamp}-{variant}-{users}"
        return worker_command(sized, runs_as, url, where.name, run_id, project), worker_env(where)

    variants = [*args.variants, *([BASELINE] if baseline else [])]
    results = instructions.per_update(variants, args.users, prepare)
    return instructions.render(results, args.users, machine(), versions(args.redis_server))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="botnodes-bench-") as tmp:
        project = bake(args.template, Path(tmp))
        baseline = bake(args.baseline, Path(tmp) / "baseline") if args.baseline else None
        with contextlib.ExitStack() as stack:
            url = args.redis_url or stack.enter_context(redis_server(args.redis_server, Path(tmp)))
            if args.webhook:
                print(run_webhook_bench(args, url, project))
                return 0
            if args.timers:
                print(run_timers_bench(args, url, project, baseline))
                return 0
            if args.scale:
                command = worker_command(
                    args, "botnodes", url, project.name, f"scale-{os.getpid()}", project
                )
                result = run_worker([*command, "--scale", str(args.scale)], project)
                print(report.render_scale(result["scale"], machine(), versions(args.redis_server)))
                return 0
            if args.instructions:
                print(run_instructions_bench(args, url, project, baseline))
                return 0
            if args.profile:
                variant = args.variants[0]
                command = worker_command(
                    args, variant, url, project.name, f"profile-{os.getpid()}", project
                )
                result = run_worker([*command, "--profile", str(args.profile.resolve())], project)
                print(
                    f"profile written to {args.profile} "
                    f"({result['throughput']['updates_per_s']:.0f} updates/s under the profiler)"
                )
                return 0
            results = benchmark(args, url, project, baseline)
    meta = {
        "repeats": args.repeats,
        "machine": machine(),
        "versions": versions(args.redis_server),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "gc_freeze": not args.no_gc_freeze,
        "settings": {
            "users": args.users,
            "in_flight": args.in_flight,
            "latency_flows": args.latency_flows,
            "burst": args.burst,
        },
    }
    text = report.render(results, meta)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "runs": results}, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
