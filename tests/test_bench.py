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


def test_the_scale_run_reports_growth_and_idle_structures() -> None:
    command = [sys.executable, "bench/run.py", "--scale", "300", "--in-flight", "10", "--quiet"]
    if os.environ.get("REDIS_URL"):
        command += ["--redis-url", os.environ["REDIS_URL"]]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = done.stdout
    assert "## Scale: 300 distinct users, 1,000 at a time" in report
    for figure in ("updates/s, first batch", "updates/s, last batch", "MEMORY USAGE", "RSS"):
        assert figure in report, f"{figure!r} missing from the scale report"
    for structure in ("busy users", "routes in flight", "pipeline queued calls"):
        [row] = [line for line in report.splitlines() if structure in line]
        assert row.endswith("| 0 |"), row
    assert "PROBLEMS" not in report


def test_the_webhook_run_serves_one_and_two_replicas_without_losing_anything() -> None:
    command = [
        sys.executable, "bench/run.py", "--webhook", "--users", "10", "--in-flight", "5", "--quiet"
    ]  # fmt: skip
    if os.environ.get("REDIS_URL"):
        command += ["--redis-url", os.environ["REDIS_URL"]]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 2, done.stdout
    for row in rows:
        _replicas, users, updates, per_second, wrong = (
            cell.strip() for cell in row.strip("|").split("|")
        )
        assert (users, updates, wrong) == ("10", "80", "0"), row
        assert float(per_second.replace(",", "")) > 0


def test_the_broadcast_run_reaches_everyone_once_without_429() -> None:
    command = [
        sys.executable, "bench/broadcast.py", "--users", "120", "--limit", "100", "--rate", "90"
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("delivered ")]
    assert " 429s 0, duplicates 0," in line, line
    assert "of the limit" in line
