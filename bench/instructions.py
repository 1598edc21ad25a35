"""CPU instructions per update, counted by valgrind's callgrind: `run.py --instructions`.

Why: updates/s on a shared 2-CPU machine move by ±30 % between runs, too much to tell a 5 %
change or to check a ratio target; an instruction count is the same on every run of the same
code, whatever else the machine does. Each variant's worker runs twice under callgrind, with
`--users` and three times as many; the difference of the two totals, divided by the
difference in updates, is what one more update costs the bot's process: start-up, warm-up,
the latency and burst phases and the exit cancel out. Not counted: the redis-server process
(its commands are in the normal run's commandstats) and time spent waiting.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: The flow each throughput user walks (bench/flows.py FLOW): 8 updates.
UPDATES_PER_USER = 8

_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def count(command: list[str], env: dict[str, str]) -> int:
    """Instructions (Ir) the command's process runs, from callgrind's output file."""
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
            cwd=Path(__file__).resolve().parent.parent,
            # One hash seed: a random one changes dict layouts, and with them the count.
            env={**env, "PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"worker under callgrind failed:\n{done.stderr[-4000:]}")
        match = _TOTALS.search(out.read_text(encoding="utf-8", errors="replace"))
        if match is None:
            sys.exit(f"no totals in callgrind's output {out}")
        return int(match.group(1))


def per_update(
    variants: Sequence[str],
    users: int,
    prepare: Callable[[str, int], tuple[list[str], dict[str, str]]],
) -> dict[str, dict[str, Any]]:
    """Each variant's instructions per update: two runs, `users` and three times as many."""
    results: dict[str, dict[str, Any]] = {}
    for variant in variants:
        totals = []
        for n in (users, 3 * users):
            totals.append(count(*prepare(variant, n)))
            print(f"{variant:16} {n:5} users: {totals[-1]:,} instructions", file=sys.stderr)
        extra_updates = 2 * users * UPDATES_PER_USER
        results[variant] = {
            "instructions_per_update": (totals[1] - totals[0]) / extra_updates,
            "totals": totals,
        }
    return results


def render(
    results: dict[str, dict[str, Any]],
    users: int,
    machine: str,
    versions: str,
    reference: str = "botnodes",
) -> str:
    """The Markdown table, then `reference`'s ratio to every other variant."""
    lines = [
        f"## CPU instructions per update (callgrind; {users} and {3 * users} users; "
        f"{machine}; {versions})",
        "",
        "| variant | instructions / update (the bot's process) |",
        "|---|---:|",
    ]
    for variant, result in results.items():
        lines.append(f"| {variant} | {result['instructions_per_update'] / 1e6:.2f} M |")
    mine = results.get(reference, {}).get("instructions_per_update")
    if mine:
        lines.append("")
        for other, result in results.items():
            if other != reference:
                ratio = mine / result["instructions_per_update"]
                lines.append(
                    f"- {reference}: {ratio:.2f}x the instructions of {other} "
                    f"(where the CPU bounds both, {1 / ratio:.2f}x its updates/s)"
                )
    lines += ["", "The redis-server process is not counted: its commands are in the timed run."]
    return "\n".join(lines)
