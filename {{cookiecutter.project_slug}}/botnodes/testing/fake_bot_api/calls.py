"""A Bot API call as the stand-in records it, and the ways Telegram ends one without a result.

The handlers raise `Refusal`, `Dropped` or `Stalled`; the session and the HTTP server each turn
them into what a bot would see from Telegram (an error body, a reset connection, no answer).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

BOT_USER = {"id": 4242, "is_bot": True, "first_name": "Food test bot", "username": "food_test_bot"}

Params = dict[str, Any]


@dataclass(frozen=True)
class ApiCall:
    """One Bot API call; `error` is None if Telegram would have carried it out."""

    method: str
    params: Params
    error: str | None = None
    #: When the stand-in took the call (time.monotonic()), e.g. to count sends in a window.
    at: float = field(default_factory=time.monotonic, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None


class UnknownMethodError(Exception):
    """The bot called a Bot API method the fake does not implement."""


class Refusal(Exception):
    """Telegram answered `{"ok": false, ...}`: the error code, description and parameters."""

    def __init__(
        self,
        status: int,
        description: str,
        retry_after: int | None = None,
        raw: str | None = None,
    ) -> None:
        super().__init__(f"{status} {description}")
        self.status = status
        self.description = description
        self.retry_after = retry_after
        #: A body that is not Telegram's JSON (a proxy's error page), sent as it is.
        self.raw = raw

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


class Dropped(Exception):
    """The connection was dropped before Telegram answered."""


class Stalled(Exception):
    """The call is never answered."""


def unique_ids() -> itertools.count[int]:
    """Ids that no earlier stand-in handed out, like Telegram's: from the clock, counting up.

    botnodes remembers the ids of handled updates (a re-delivery runs once), so a test that
    starts a second client or bot process against the same Redis must not reuse them.
    """
    return itertools.count(time.time_ns() // 1000)
