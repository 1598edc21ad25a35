"""A broadcast's counts, its summary line and its progress display (see broadcast.py).

Apart from the job so the numbers' meaning is read in one place: every user a job claimed is
in exactly one count, so the summary adds up to what Telegram was asked to deliver.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

#: Seconds between two progress lines when the output is not a terminal.
PLAIN_PROGRESS_EVERY = 5.0
BAR_WIDTH = 30


@dataclass(frozen=True, slots=True)
class Counts:
    """A job's outcomes so far, over every process that worked on it."""

    sent: int = 0
    blocked: int = 0
    failed: int = 0
    #: Claimed and never answered: a process killed (or still sending) between claim and send.
    claimed: int = 0
    #: Sent, but no readable answer came back (see `UNKNOWN`): they may have got it.
    unknown: int = 0

    @property
    def unconfirmed(self) -> int:
        """Users whose outcome the job can't know; none of them is sent the job again."""
        return self.claimed + self.unknown

    @property
    def done(self) -> int:
        return self.sent + self.blocked + self.failed + self.unconfirmed

    def summary(self, job_id: str) -> str:
        """One line whose numbers add up to every user the job claimed."""
        line = (
            f"Broadcast {job_id}: sent {self.sent}, skipped as blocked {self.blocked}, "
            f"failed {self.failed}"
        )
        if not self.unconfirmed:
            return line
        why = []
        if self.unknown:
            why.append(
                f"{self.unknown} sent without a readable answer (a dropped connection, a "
                "timeout or a proxy's error page): they may have got it"
            )
        if self.claimed:
            why.append(f"{self.claimed} claimed by a process that was killed or is still sending")
        return (
            f"{line}, unconfirmed {self.unconfirmed} ({'; '.join(why)}; "
            "none is sent again, so nobody gets it twice)"
        )


class Progress:
    """A bar with counts and ETA on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, job_id: str, total: int, stream: TextIO = sys.stderr) -> None:
        self._job_id = job_id
        self._total = max(total, 1)
        self._stream = stream
        self._tty = stream.isatty()
        self._started = time.monotonic()
        self._first: int | None = None
        self._last_line = 0.0

    def show(self, counts: Counts, *, final: bool = False) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = counts.done
        if not self._tty and not final and now - self._last_line < PLAIN_PROGRESS_EVERY:
            return
        self._last_line = now
        rate = (counts.done - self._first) / max(now - self._started, 1e-6)
        left = max(self._total - counts.done, 0)
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        line = (
            f"{counts.done}/{self._total} sent {counts.sent} blocked {counts.blocked} "
            f"failed {counts.failed} | {rate:.1f}/s | ETA {eta}"
        )
        if self._tty:
            filled = int(BAR_WIDTH * min(counts.done / self._total, 1.0))
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self._stream.write(f"\r[{bar}] {line}" + ("\n" if final else ""))
        else:
            self._stream.write(f"Broadcast {self._job_id}: {line}\n")
        self._stream.flush()
