"""Smoke test of the benchmark (bench/): tiny sizes, every figure present, nothing lost.

Not a timed test: speed depends on the machine, so only the report's completeness and the
correctness figures (lost updates, conversations, errors) are asserted. The full run is
`python bench/run.py`; see the README's Benchmark section.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("botnodes", "fsm", "fsm-noiso", "floor", "ceiling", "botnodes-before")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One tiny benchmark: 20 users, 10 in flight, 1 repeat; returns (raw JSON, report text)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    command = [
        sys.executable,
        "bench/run.py",
        "--users",
        "20",
        "--in-flight",
        "10",
        "--latency-flows",
        "3",
        "--burst",
        "10",
        "--repeats",
        "1",
        "--json",
        str(out),
        "--quiet",
        # The template itself as the "version before": exercises the comparison option.
        "--baseline",
        str(REPO_ROOT),
    ]
    if os.environ.get("REDIS_URL"):
        command += ["--redis-url", os.environ["REDIS_URL"]]
    elif shutil.which("redis-server") is None:
        pytest.fail("the benchmark needs redis-server on PATH or REDIS_URL (a private server)")
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def test_every_variant_ran_once(bench_run: tuple[dict[str, Any], str]) -> None:
    data, _ = bench_run
    assert sorted(run["variant"] for run in data["runs"]) == sorted(VARIANTS)


def test_every_figure_is_reported(bench_run: tuple[dict[str, Any], str]) -> None:
    data, text = bench_run
    for run in data["runs"]:
        throughput, latency, burst = run["throughput"], run["latency"], run["burst"]
        assert throughput["updates_per_s"] > 0
        assert latency["p50_ms"] > 0
        assert latency["p99_ms"] >= latency["p50_ms"]
        if run["variant"] == "ceiling":  # touches no storage at all
            assert throughput["round_trips_per_update"] == 0
            assert throughput["server_commands_per_update"] == 0
        else:
            assert throughput["round_trips_per_update"] > 0
            assert throughput["server_commands_per_update"] > 0
        assert run["peak_rss_mb"] > 0
        assert burst["drain_s"] > 0
        assert burst["lost"] >= 0
    for needle in (
        "updates/s",
        "p50 latency",
        "p99 latency",
        "round trips / update",
        "commands / update",
        "peak RSS",
        "lost updates",
        "drain",
        "botnodes/fsm",
        "botnodes/floor",
        "botnodes/ceiling",
        "botnodes/botnodes-before",
        "the ceiling's updates/s",
        "Targets:",
        "Machine:",
        "Versions:",
        "Date:",
    ):
        assert needle in text, f"{needle!r} missing from the report"


def table_row(text: str, label: str) -> dict[str, str]:
    """The report's table row named `label`, as {variant label: cell}."""
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| median of runs |"))
    [row] = [line for line in lines if line.startswith(f"| {label} |")]
    names = [cell.strip() for cell in header.strip("|").split("|")][1:]
    cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
    return dict(zip(names, cells, strict=True))


def test_a_lone_users_update_costs_botnodes_two_round_trips(
    bench_run: tuple[dict[str, Any], str],
) -> None:
    data, text = bench_run
    [botnodes] = [run for run in data["runs"] if run["variant"] == "botnodes"]
    assert botnodes["latency"]["round_trips_per_update"] == 2  # lock and read, then commit
    row = table_row(text, "Redis round trips / update (client), one user alone")
    assert row["botnodes (generated bot)"] == "2.00", row
    assert "- [x] botnodes: 2 Redis round trips per update for one user alone" in text


def test_the_report_sets_botnodes_commands_beside_the_fsms_with_the_ratio(
    bench_run: tuple[dict[str, Any], str],
) -> None:
    data, text = bench_run
    figures = {
        run["variant"]: (
            run["throughput"]["server_commands_per_update"],
            run["latency"]["server_commands_per_update"],
        )
        for run in data["runs"]
    }
    lines = text.splitlines()
    for scope, label in enumerate(
        (
            "Redis commands / update (commandstats, incl. inside Lua)",
            "Redis commands / update (commandstats, incl. inside Lua), one user alone",
        )
    ):
        botnodes, fsm = figures["botnodes"][scope], figures["fsm"][scope]
        assert botnodes > 0
        assert fsm > 0
        line = (
            f"- {label}: botnodes {botnodes:.2f}, fsm {fsm:.2f}, botnodes/fsm {botnodes / fsm:.2f}x"
        )
        assert line in lines, f"{line!r} missing from the report"
        row = table_row(text, label)
        assert row["botnodes (generated bot)"] == f"{botnodes:.2f}", row
        assert row["aiogram FSM + RedisEventIsolation"] == f"{fsm:.2f}", row
    assert "] botnodes <= 10 Redis commands per update, incl. inside Lua (issue 28): " in text


def test_every_conversation_was_right(bench_run: tuple[dict[str, Any], str]) -> None:
    data, text = bench_run
    for run in data["runs"]:
        assert run["throughput"]["errors"] == 0, run["throughput"]["first_error"]
        assert run["throughput"]["users_with_wrong_replies"] == 0, run["variant"]
        assert run["latency"]["errors"] == 0, run["variant"]
    assert "PROBLEMS" not in text


def test_botnodes_and_isolated_fsm_lose_nothing(bench_run: tuple[dict[str, Any], str]) -> None:
    data, _ = bench_run
    lost = {run["variant"]: run["burst"]["lost"] for run in data["runs"]}
    assert lost["botnodes"] == 0
    assert lost["fsm"] == 0
    burst = next(run["burst"] for run in data["runs"] if run["variant"] == "botnodes")
    assert burst["in_order"], "botnodes handles one user's events in arrival order"


def run_bench(*options: str) -> str:
    """`bench/run.py --quiet` with `options` (on REDIS_URL if set); its printed report."""
    command = [sys.executable, "bench/run.py", *options, "--quiet"]
    if os.environ.get("REDIS_URL"):
        command += ["--redis-url", os.environ["REDIS_URL"]]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_scale_run_reports_growth_and_idle_structures() -> None:
    report = run_bench("--scale", "300", "--in-flight", "10")
    assert "## Scale: 300 distinct users, 1,000 at a time" in report
    for figure in ("updates/s, first batch", "updates/s, last batch", "MEMORY USAGE", "RSS"):
        assert figure in report, f"{figure!r} missing from the scale report"
    for structure in ("busy users", "routes in flight", "pipeline queued calls"):
        [row] = [line for line in report.splitlines() if structure in line]
        assert row.endswith("| 0 |"), row
    assert "PROBLEMS" not in report


def test_the_webhook_run_serves_one_and_two_replicas_without_losing_anything() -> None:
    report = run_bench("--webhook", "--users", "10", "--in-flight", "5")
    rows = [line for line in report.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 2, report
    for row in rows:
        _replicas, users, updates, per_second, wrong = (
            cell.strip() for cell in row.strip("|").split("|")
        )
        assert (users, updates, wrong) == ("10", "80", "0"), row
        assert float(per_second.replace(",", "")) > 0


def test_the_timers_run_reports_memory_firing_lateness_and_cost_per_update() -> None:
    report = run_bench(
        "--timers", "40", "--users", "10", "--in-flight", "5", "--latency-flows", "2",
        "--burst", "5", "--repeats", "1", "--baseline", str(REPO_ROOT),
    )  # fmt: skip
    assert "## Timers: 40 users with pending cart timers (2 each: reminder and expiry)" in report
    cells = {
        row.split(" | ")[0].strip("| "): row.rsplit(" | ", 1)[1].strip(" |")
        for row in report.splitlines()
        if row.startswith("| ") and row.count(" | ") >= 1
    }
    # Every user is in the schedule once, and every reminder went out exactly once.
    assert cells["users in the timer schedule"] == "40"
    assert cells["reminders fired, all due at once"] == "40"
    assert cells["users reminded exactly once"] == "40"
    # Those due one by one during traffic (as many as the measured firing speed allows): each
    # one fired, and exactly once.
    fired, due, once = cells[
        "reminders due one by one during traffic, fired / exactly once"
    ].split()[::2]
    assert fired == due == once != "0"
    for figure in (
        "Redis memory per pending timer (bytes)",
        "MEMORY USAGE of the schedule per user (bytes)",
        "timers fired per second by run_timers",
    ):
        assert float(cells[figure].replace(",", "")) > 0, figure
    p50, p99, worst = (
        float(v.replace(",", ""))
        for v in cells[next(c for c in cells if "lateness" in c)].split("/")
    )
    assert 0 <= p50 <= p99 <= worst
    # The cost per update: timers on, off and the version before, and the ratios between them.
    assert "| | timers on | timers off | botnodes-before |" in report
    assert "- timers on / timers off: updates/s " in report
    assert "- timers on / botnodes-before: updates/s " in report
    rows = {
        row.split(" | ")[0].strip("| "): [float(c) for c in row.strip("|").split("|")[1:]]
        for row in report.splitlines()
        if row.startswith(("| EVALSHA / update |", "| Redis round trips / update |",
                           "| Redis commands / update (incl. inside Lua) |"))
    }  # fmt: skip
    # Timers ride inside the commit script: no script call and no round trip of their own,
    # only the ZADD/ZREM run inside it.
    on, off, _before = rows["EVALSHA / update"]
    assert on == off, "a step that arms or drops timers must not send a script of its own"
    on, off, _before = rows["Redis round trips / update"]
    assert on == off, "timers must not add a round trip"
    on, off, _before = rows["Redis commands / update (incl. inside Lua)"]
    assert on > off, "the commit script schedules the timers (ZADD/ZREM inside it)"
    assert "PROBLEMS" not in report


@pytest.mark.parametrize(
    "latency",
    # At 0.95 of the limit over a jittery network (50-150 ms each way) the sends arrive
    # bunched: the bulk window (BROADCAST_LIMIT) keeps every second within the limit.
    [[], ["--rate", "95", "--latency", "100"]],
    ids=["local", "latency"],
)
def test_the_broadcast_run_reaches_everyone_once_without_429(latency: list[str]) -> None:
    command = [
        sys.executable, "bench/broadcast.py", "--users", "120", "--limit", "100", "--rate", "90",
        *latency,
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("delivered ")]
    assert " 429s 0, duplicates 0," in line, line
    assert "of the limit" in line


def test_the_payments_run_answers_every_pre_checkout_and_orders_once_per_payment() -> None:
    command = [
        sys.executable, "bench/payments.py", "--users", "12", "--chatter", "3", "--idle-users", "3"
    ]  # fmt: skip
    if os.environ.get("REDIS_URL"):
        command += ["--redis-url", os.environ["REDIS_URL"]]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = done.stdout
    assert "## Payments: pre-checkout answer time, 12 users in flight (PAYMENTS=stars)" in report
    cells = {
        row.split(" | ")[0].strip("| *"): row.rsplit(" | ", 1)[1].strip(" |*")
        for row in report.splitlines()
        if row.startswith("| ") and row.count(" | ") >= 1
    }
    # Every pre-checkout answered once and ok, and within Telegram's deadline.
    assert cells["pre-checkout queries answered once / ok"] == "12 / 12"
    assert cells["answered within Telegram's 10 s"] == "12"
    # Each query came while that user's own messages were queued in the bot.
    queued = "queries fed while the user's own messages were queued in botnodes (mean queue)"
    assert cells[queued].split()[0] == "12"
    # One order per payment, under its charge's key, with the payment; nothing refunded.
    assert cells["payments / orders placed / distinct orders"] == "12 / 12 / 12"
    assert cells["orders under their charge's idempotency key / with the payment"] == "12 / 12"
    assert cells["refunds"] == "0"
    assert cells["users told their paid order was placed, once"] == "12"
    assert cells["users back on Start"] == "12"
    for figure in (
        "pre-checkout answer time p50 / p99 / max (ms)",
        "the same, one user at a time on an idle bot, p50 / p99 / max (ms)",
        "an ordinary message of the same users meanwhile, p50 / p99 / max (ms)",
    ):
        p50, p99, worst = (float(v.replace(",", "")) for v in cells[figure].split("/"))
        assert 0 < p50 <= p99 <= worst, figure
    for needle in ("Machine:", "Versions:", "Load:", "pre-checkout p99 / ordinary message p99"):
        assert needle in report, f"{needle!r} missing from the payments report"
    assert "PROBLEMS" not in report


def test_instructions_per_update_is_the_difference_of_two_counted_runs() -> None:
    """callgrind counts a loop's extra work: `per_update` divides it by the extra updates."""
    if shutil.which("valgrind") is None:
        pytest.fail("bench --instructions needs valgrind: apt-get install valgrind")
    sys.path.insert(0, str(REPO_ROOT))
    from bench import instructions

    loop = "x = 0\nfor i in range({}):\n    x += i * i\n"

    def prepare(variant: str, users: int) -> tuple[list[str], dict[str, str]]:
        # Enough work per "update" that the interpreter's start-up is small beside it.
        work = users * instructions.UPDATES_PER_USER * (10_000 if variant == "heavy" else 1_000)
        return [sys.executable, "-S", "-c", loop.format(work)], dict(os.environ)

    results = instructions.per_update(["light", "heavy"], 2, prepare)
    light = results["light"]["instructions_per_update"]
    heavy = results["heavy"]["instructions_per_update"]
    # Ten times the loop per "update" costs about ten times the instructions; start-up cancels.
    assert light > 0
    assert 8 < heavy / light < 12, (light, heavy)
    report = instructions.render(results, 2, "machine", "versions", reference="light")
    assert "| heavy |" in report
    assert "light: 0.1" in report, report
