"""The ways Telegram fails on purpose: chosen calls answering 429, a 5xx, a reset or nothing,
and the flood control that answers 429 to a bot sending faster than Telegram's rates.

Kept apart from the method handlers: a failure applies to any method, before or after it is
carried out (`FakeTelegram.answer` decides which).
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .calls import Dropped, Params, Refusal, Stalled


@dataclass
class Failure:
    """A failure `FakeTelegram.fail()` set up: which calls it hits, how often, and how."""

    method: str
    status: int | None
    retry_after: int | None
    drop: bool
    times: int
    match: Callable[[Params], bool] | None
    stall: bool = False
    delivered: bool = False
    body: str | None = None

    def applies(self, method: str, params: Params) -> bool:
        return (
            self.times > 0 and method == self.method and (self.match is None or self.match(params))
        )

    def trigger(self) -> None:
        self.times -= 1
        if self.stall:
            raise Stalled(self.method)
        if self.drop:
            raise Dropped(self.method)
        status = self.status or 500
        if status == 429:
            retry_after = self.retry_after if self.retry_after is not None else 1
            raise Refusal(429, f"Too Many Requests: retry after {retry_after}", retry_after)
        descriptions = {
            400: "Bad Request: chat not found",
            403: "Forbidden: bot was blocked by the user",
            500: "Internal Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
        }
        raise Refusal(status, descriptions.get(status, "Server Error"), raw=self.body)


#: The methods that put a message in a chat: what Telegram's rates count.
RATED_METHODS = frozenset(
    {"sendMessage", "sendPhoto", "sendDocument", "sendMediaGroup", "copyMessage", "forwardMessage"}
)


@dataclass
class TelegramRates:
    """Telegram's flood control as the stand-in applies it once `enforce_rates()` is called.

    Telegram publishes no exact rule, only "about 30 messages per second" overall and "about
    one per second in a chat, short bursts tolerated; 20 per minute in a group". Here: at
    most `per_second` messages in any one-second window, and per chat a bucket of
    `chat_burst` messages refilled at `chat_per_second` (`group_per_minute` for groups).
    """

    per_second: int = 30
    chat_per_second: float = 1.0
    group_per_minute: float = 20.0
    chat_burst: int = 4
    #: Messages refused with 429 by these rates (not counting failures set with `fail()`).
    refused: int = 0
    _window: collections.deque[float] = field(default_factory=collections.deque)
    _buckets: dict[int, tuple[float, float]] = field(default_factory=dict)

    def take(self, chat_id: int, now: float) -> None:
        """Count one message to `chat_id`, or raise the 429 Telegram would answer."""
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        rate = self.group_per_minute / 60 if chat_id < 0 else self.chat_per_second
        tokens, then = self._buckets.get(chat_id, (float(self.chat_burst), now))
        tokens = min(float(self.chat_burst), tokens + (now - then) * rate)
        if len(self._window) >= self.per_second:
            self._refuse(self._window[0] + 1.0 - now)
        if tokens < 1:
            self._refuse((1 - tokens) / rate)
        self._window.append(now)
        self._buckets[chat_id] = (tokens - 1, now)

    def _refuse(self, wait: float) -> None:
        self.refused += 1
        retry_after = max(1, math.ceil(wait))
        raise Refusal(429, f"Too Many Requests: retry after {retry_after}", retry_after)


@dataclass(frozen=True)
class Latency:
    """The network between the bot and Telegram: each call waits `seconds` (times a random
    factor in 1 +- `jitter`) before the stand-in takes it, and again before its answer.

    Telegram counts a message when it arrives: sends started evenly arrive bunched when
    their trips differ, which is how a bot paced under 30 a second still meets 429s.
    Off unless `FakeTelegram.latency` is set (tests, `bench/broadcast.py --latency`).
    """

    seconds: float
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.seconds < 0 or not 0 <= self.jitter <= 1:
            raise ValueError(
                f"Latency({self.seconds}, {self.jitter}): need seconds >= 0, 0 <= jitter <= 1"
            )

    async def trip(self) -> None:
        """One way of a call (to Telegram, or its answer back)."""
        spread = random.uniform(1 - self.jitter, 1 + self.jitter)  # noqa: S311 - not a secret
        await asyncio.sleep(self.seconds * spread)
