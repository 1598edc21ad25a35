"""Medians over repeats, the ratios and targets of issue 5, as text and as a Markdown table."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Result = dict[str, Any]

#: Display order and labels of the variants.
LABELS = {
    "botnodes": "botnodes (generated bot)",
    "botnodes-before": "botnodes, version before (--baseline)",
    "fsm": "aiogram FSM + RedisEventIsolation",
    "fsm-noiso": "aiogram FSM, no isolation",
    "floor": "floor: 1 GET + 1 SET",
    "ceiling": "ceiling: no storage",
}


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    label: str
    get: Callable[[Result], float]
    fmt: str
    higher_is_better: bool


METRICS: tuple[Metric, ...] = (
    Metric(
        "updates_per_s",
        "updates/s ({users:,} users, {in_flight} in flight)",
        lambda r: r["throughput"]["updates_per_s"],
        "{:,.0f}",
        True,
    ),
    Metric(
        "p50_ms", "p50 latency, one user (ms)", lambda r: r["latency"]["p50_ms"], "{:.2f}", False
    ),
    Metric(
        "p99_ms", "p99 latency, one user (ms)", lambda r: r["latency"]["p99_ms"], "{:.2f}", False
    ),
    Metric(
        "round_trips",
        "Redis round trips / update (client)",
        lambda r: r["throughput"]["round_trips_per_update"],
        "{:.2f}",
        False,
    ),
    Metric(
        "server_commands",
        "Redis commands / update (commandstats, incl. inside Lua)",
        lambda r: r["throughput"]["server_commands_per_update"],
        "{:.2f}",
        False,
    ),
    Metric(
        "lone_round_trips",
        "Redis round trips / update (client), one user alone",
        lambda r: r["latency"].get("round_trips_per_update", float("nan")),
        "{:.2f}",
        False,
    ),
    Metric(
        "lone_commands",
        "Redis commands / update (commandstats, incl. inside Lua), one user alone",
        lambda r: r["latency"].get("server_commands_per_update", float("nan")),
        "{:.2f}",
        False,
    ),
    Metric("peak_rss_mb", "peak RSS (MiB)", lambda r: r["peak_rss_mb"], "{:.0f}", False),
    Metric(
        "lost",
        "lost updates, {burst}-event burst of one user",
        lambda r: r["burst"]["lost"],
        "{:.0f}",
        False,
    ),
    Metric(
        "drain_s", "time to drain that burst (s)", lambda r: r["burst"]["drain_s"], "{:.3f}", False
    ),
)

METRIC_BY_KEY = {metric.key: metric for metric in METRICS}


def medians(results: Sequence[Result]) -> dict[str, dict[str, float]]:
    """Median of every metric per variant, over all repeats."""
    by_variant: dict[str, list[Result]] = {}
    for result in results:
        by_variant.setdefault(result["variant"], []).append(result)
    return {
        variant: {m.key: statistics.median(m.get(r) for r in runs) for m in METRICS}
        for variant, runs in by_variant.items()
    }


def worst(results: Sequence[Result], variant: str, key: str) -> float:
    """The worst value over repeats (for counts that must be 0 in every run, not in the median)."""
    return max(METRIC_BY_KEY[key].get(r) for r in results if r["variant"] == variant)


#: The run each command count comes from, as the report names it.
COST_SCOPE = {"server_commands": "throughput run", "lone_commands": "one user alone"}


def redis_cost(table: dict[str, dict[str, float]]) -> list[str]:
    """Commands and round trips per update, botnodes and aiogram's FSM side by side."""
    if not {"botnodes", "fsm"} <= table.keys():
        return []
    bn, fsm = table["botnodes"], table["fsm"]
    out = ["Redis cost per update, botnodes vs aiogram FSM + RedisEventIsolation:"]
    for key in ("server_commands", "lone_commands", "round_trips", "lone_round_trips"):
        label = METRIC_BY_KEY[key].label
        ratio = f", botnodes/fsm {bn[key] / fsm[key]:.2f}x" if fsm[key] else ""
        out.append(f"- {label}: botnodes {bn[key]:.2f}, fsm {fsm[key]:.2f}{ratio}")
    return out


def ratios(table: dict[str, dict[str, float]]) -> dict[str, float]:
    """botnodes / FSM and botnodes / floor for throughput, plus the burst drain speed-up."""
    out: dict[str, float] = {}
    bn = table.get("botnodes")
    if bn is None:
        return out
    for other in ("botnodes-before", "fsm", "fsm-noiso", "floor", "ceiling"):
        if other in table:
            out[f"updates/s botnodes/{other}"] = bn["updates_per_s"] / table[other]["updates_per_s"]
            out[f"p50 botnodes/{other}"] = bn["p50_ms"] / table[other]["p50_ms"]
    if "fsm" in table:
        for key in ("server_commands", "lone_commands"):
            if table["fsm"][key]:
                out[f"Redis commands / update botnodes/fsm ({COST_SCOPE[key]})"] = (
                    bn[key] / table["fsm"][key]
                )
    if "fsm" in table and bn["drain_s"] > 0:
        out["burst drain speed-up vs fsm"] = table["fsm"]["drain_s"] / bn["drain_s"]
    return out


def targets(
    results: Sequence[Result], table: dict[str, dict[str, float]]
) -> list[tuple[str, bool, str]]:
    """Each target of issue 5 with whether it holds and the figure it was judged on."""
    if not {"botnodes", "fsm", "floor"} <= table.keys():
        return []
    bn, fsm, floor = table["botnodes"], table["fsm"], table["floor"]
    vs_fsm = bn["updates_per_s"] / fsm["updates_per_s"]
    vs_floor = bn["updates_per_s"] / floor["updates_per_s"]
    speed_up = fsm["drain_s"] / bn["drain_s"] if bn["drain_s"] else float("inf")
    lost_bn, lost_fsm = worst(results, "botnodes", "lost"), worst(results, "fsm", "lost")
    rt = max(METRIC_BY_KEY["round_trips"].get(r) for r in results if r["variant"] == "botnodes")
    lone_rt = max(
        METRIC_BY_KEY["lone_round_trips"].get(r) for r in results if r["variant"] == "botnodes"
    )
    commands = max(
        METRIC_BY_KEY["server_commands"].get(r) for r in results if r["variant"] == "botnodes"
    )
    vs_ceiling = (
        [
            (
                "botnodes >= 0.8x the ceiling's updates/s (no storage at all)",
                bn["updates_per_s"] / table["ceiling"]["updates_per_s"] >= 0.8,
                f"{bn['updates_per_s'] / table['ceiling']['updates_per_s']:.2f}x",
            )
        ]
        if "ceiling" in table
        else []
    )
    return [
        *vs_ceiling,
        ("botnodes >= 2x the FSM's updates/s", vs_fsm >= 2, f"{vs_fsm:.2f}x"),
        ("botnodes >= 0.8x the floor's updates/s", vs_floor >= 0.8, f"{vs_floor:.2f}x"),
        ("botnodes <= 2 Redis round trips per update, lock included", rt <= 2, f"{rt:.2f}"),
        (
            "botnodes: 2 Redis round trips per update for one user alone (issue 28)",
            lone_rt <= 2,
            f"{lone_rt:.2f}",
        ),
        (
            "botnodes <= 10 Redis commands per update, incl. inside Lua (issue 28)",
            commands <= 10,
            f"{commands:.2f}",
        ),
        (
            "0 lost updates: botnodes and FSM with isolation (every run)",
            lost_bn == 0 and lost_fsm == 0,
            f"botnodes {lost_bn:.0f}, FSM {lost_fsm:.0f}",
        ),
        (
            "50-event burst drains >= 10x faster than FSM + RedisEventIsolation",
            speed_up >= 10,
            f"{speed_up:.0f}x",
        ),
    ]


def problems(results: Sequence[Result]) -> list[str]:
    """Runs whose users got a wrong conversation or whose updates raised: figures are void then."""
    found = []
    for r in results:
        t = r["throughput"]
        if t["errors"] or t["users_with_wrong_replies"] or r["latency"]["errors"]:
            found.append(
                f"{r['variant']}: {t['errors']} errors ({t['first_error']}), "
                f"{t['users_with_wrong_replies']} users with wrong replies, "
                f"{r['latency']['errors']} latency errors"
            )
        if r["burst"]["errors"]:
            found.append(
                f"{r['variant']} burst: {r['burst']['errors']} errors ({r['burst']['first_error']})"
            )
    return found


def markdown_table(table: dict[str, dict[str, float]], settings: dict[str, Any]) -> str:
    """Variants as columns, metrics as rows: fits a README."""
    variants = [v for v in LABELS if v in table]
    lines = [
        "| median of runs | " + " | ".join(LABELS[v] for v in variants) + " |",
        "|---|" + "---:|" * len(variants),
    ]
    for metric in METRICS:
        cells = [metric.fmt.format(table[v][metric.key]) for v in variants]
        lines.append(f"| {metric.label.format(**settings)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(results: Sequence[Result], meta: dict[str, Any]) -> str:
    """The whole printed report: table, ratios, targets, Redis command mix, any problems."""
    table = medians(results)
    out = [
        f"## Results ({meta['repeats']} repeats, medians)",
        "",
        markdown_table(table, meta["settings"]),
        "",
    ]
    out.append("Ratios (medians):")
    out += [f"- {name}: {value:.2f}x" for name, value in ratios(table).items()]
    cost = redis_cost(table)
    if cost:
        out += ["", *cost]
    out += ["", "Targets:"]
    out += [
        f"- [{'x' if ok else ' '}] {name}: {figure}" for name, ok, figure in targets(results, table)
    ]
    out += ["", "Redis commands per update by name (first run of each variant, commandstats):"]
    seen: set[str] = set()
    for r in results:
        if r["variant"] in seen:
            continue
        seen.add(r["variant"])
        updates = r["throughput"]["updates"]
        mix = ", ".join(
            f"{name} {calls / updates:.2f}"
            for name, calls in sorted(r["throughput"]["commandstats"].items())
        )
        out.append(f"- {r['variant']}: {mix}")
    issues = problems(results)
    if issues:
        out += ["", "PROBLEMS (figures of these runs are not comparable):"] + [
            f"- {p}" for p in issues
        ]
    out += [
        "",
        f"Settings: {meta['settings']['users']} users x 8 updates, "
        f"{meta['settings']['in_flight']} in flight; latency over "
        f"{meta['settings']['latency_flows'] * 8} updates; burst of {meta['settings']['burst']}; "
        f"gc.freeze() after start-up: {'yes' if meta.get('gc_freeze', True) else 'no'}",
        "Machine: " + meta["machine"],
        "Versions: " + meta["versions"],
        "Date: " + meta["date"],
    ]
    return "\n".join(out)


def render_scale(scale: dict[str, Any], machine: str, versions: str) -> str:
    """The scale run: speed at the start and the end, memory, and what stayed in process."""
    out = [
        f"## Scale: {scale['users']:,} distinct users, 1,000 at a time",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| updates/s, first batch | {scale['first_batch_updates_per_s']:,.0f} |",
        f"| updates/s, last batch | {scale['last_batch_updates_per_s']:,.0f} |",
        f"| Redis used_memory per stored user (bytes) | {scale['redis_bytes_per_user']:,.0f} |",
        f"| MEMORY USAGE of a user's key, mean of a sample (bytes) | "
        f"{scale['sampled_state_key_bytes']:,.0f} |",
        f"| worker RSS before (MiB) | {scale['rss_before_mb']:,.0f} |",
        f"| worker RSS after (MiB) | {scale['rss_after_mb']:,.0f} |",
        f"| worker RSS after gc.collect() (MiB) | {scale['rss_after_gc_mb']:,.0f} |",
        f"| Python objects left per user (bounded caches of aiogram included) | "
        f"{scale['gc_objects_per_user']:.3f} |",
    ]
    out += [
        f"| {name}, all users idle | {value:,} |"
        for name, value in scale["structures_when_idle"].items()
    ]
    if scale["errors"]:
        out += ["", f"PROBLEMS: {scale['errors']} errors ({scale['first_error']})"]
    out += ["", "Machine: " + machine, "Versions: " + versions]
    return "\n".join(out)


#: The cost rows of the timers report: label and how to read it from a worker's result.
TIMER_COSTS: tuple[tuple[str, Callable[[Result], float], str], ...] = (
    ("updates/s", lambda r: r["throughput"]["updates_per_s"], "{:,.0f}"),
    ("p50 latency, one user (ms)", lambda r: r["latency"]["p50_ms"], "{:.2f}"),
    ("Redis round trips / update", lambda r: r["throughput"]["round_trips_per_update"], "{:.2f}"),
    (
        "Redis commands / update (incl. inside Lua)",
        lambda r: r["throughput"]["server_commands_per_update"],
        "{:.2f}",
    ),
    (
        "EVALSHA / update",
        lambda r: r["throughput"]["commandstats"].get("evalsha", 0) / r["throughput"]["updates"],
        "{:.2f}",
    ),
)


def _timer_cost_lines(costs: Sequence[Result]) -> list[str]:
    """Medians of timers on / off / before as a table, and what timers add per update."""
    names = list(dict.fromkeys(r["variant"] for r in costs))
    table = {
        name: [
            statistics.median(get(r) for r in costs if r["variant"] == name)
            for _, get, _ in TIMER_COSTS
        ]
        for name in names
    }
    out = [
        f"### What timers cost per ordinary update (medians of {len(costs) // len(names)} runs)",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for row, (label, _, fmt) in enumerate(TIMER_COSTS):
        out.append(f"| {label} | " + " | ".join(fmt.format(table[n][row]) for n in names) + " |")
    on = table["timers on"]
    out.append("")
    for other in names[1:]:
        out.append(
            f"- timers on / {other}: updates/s {on[0] / table[other][0]:.2f}x, "
            f"Redis commands / update {on[3] / table[other][3]:.2f}x "
            f"({on[3] - table[other][3]:+.2f} per update), "
            f"round trips / update {on[2] - table[other][2]:+.2f}"
        )
    wrong = [
        f"{r['variant']}: {r['throughput']['errors']} errors, "
        f"{r['throughput']['users_with_wrong_replies']} users with wrong replies"
        for r in costs
        if r["throughput"]["errors"] or r["throughput"]["users_with_wrong_replies"]
    ]
    return out + (
        ["", "PROBLEMS (figures of these runs are not comparable):", *wrong] if wrong else []
    )


def render_timers(timers: Result, costs: Sequence[Result], machine: str, versions: str) -> str:
    """The timers run: memory per pending timer, firing speed and lateness, cost per update."""
    t = timers
    per_user_timers = t["schedule_bytes_per_user"] + (
        t["user_key_bytes_with_timers"] - t["user_key_bytes_without_timers"]
    )
    out = [
        f"## Timers: {t['users']:,} users with pending cart timers "
        f"({t['timers_per_user']} each: reminder and expiry)",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| users in the cart, placed per second | {t['users'] / t['placing_s']:,.0f} |",
        f"| users in the timer schedule | {t['users_in_schedule']:,} |",
        f"| Redis used_memory per user in the cart, state and timers (bytes) | "
        f"{t['used_memory_per_user']:,.0f} |",
        f"| MEMORY USAGE of the schedule per user (bytes) | {t['schedule_bytes_per_user']:,.0f} |",
        f"| MEMORY USAGE of a user's key with / without its pending timers (bytes) | "
        f"{t['user_key_bytes_with_timers']:,.0f} / {t['user_key_bytes_without_timers']:,.0f} |",
        f"| pending timers in a user's value (bytes of JSON) | {t['value_bytes_of_timers']:,.0f} |",
        f"| Redis memory per user for their timers (bytes) | {per_user_timers:,.0f} |",
        f"| Redis memory per pending timer (bytes) | "
        f"{per_user_timers / t['timers_per_user']:,.0f} |",
        f"| reminders fired, all due at once | {t['fired'].get('reminder', 0):,} |",
        f"| users reminded exactly once | {t['reminded_once']:,} |",
        f"| timers fired per second by run_timers | {t['fired_per_s']:,.0f} |",
        f"| Redis commands per fired timer (incl. inside Lua) | {t['commands_per_firing']:.2f} |",
        f"| reminders falling due per second during traffic "
        f"({t['lateness_load']:.0%} of the above) | {t['lateness_due_per_s']:,.0f} |",
        f"| reminders due one by one during traffic, fired / exactly once | "
        f"{t['lateness_fired']:,} of {t['lateness_users']:,} / {t['lateness_reminded_once']:,} |",
        f"| firing lateness p50 / p99 / max (ms), poll every "
        f"{t['poll_interval_s'] * 1000:.0f} ms | {t['lateness_p50_s'] * 1000:,.0f} / "
        f"{t['lateness_p99_s'] * 1000:,.0f} / {t['lateness_max_s'] * 1000:,.0f} |",
        f"| traffic meanwhile: updates/s, users who walked the flow | "
        f"{t['traffic_updates_per_s']:,.0f}, {t['traffic_users_finished']:,} |",
        "",
    ]
    problems = []
    if t["placing_errors"] or t["traffic_errors"]:
        problems.append(
            f"{t['placing_errors']} users not placed ({t['first_error']}), "
            f"{t['traffic_errors']} traffic updates failed"
        )
    if t["reminded_once"] != t["users"] or t["lateness_reminded_once"] != t["lateness_users"]:
        problems.append("a user was reminded never or twice")
    if t["traffic_users_with_wrong_replies"]:
        problems.append(f"{t['traffic_users_with_wrong_replies']} traffic users got wrong replies")
    if problems:
        out += ["PROBLEMS (figures void):", *(f"- {p}" for p in problems), ""]
    out += _timer_cost_lines(costs)
    out += ["", "Machine: " + machine, "Versions: " + versions]
    return "\n".join(out)
