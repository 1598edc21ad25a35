"""`NodesSettings`: the tuning knobs of `Nodes`, checked once, in one value.

A deploy passes the same dozen numbers to every replica; grouping them in a frozen value lets
a bot build them from its config in one place, compare them, and reuse them in tests with
`dataclasses.replace`, while `Nodes` keeps only the collaborators (Redis, nodes, ctx) apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TypedDict

from .errors import ConfigurationError
from .storage import MAX_TTL_SECONDS


@dataclass(frozen=True, slots=True, kw_only=True)
class NodesSettings:
    """How long state and locks live, how much may wait or run, and how strict routing is.

    Every value is checked when the settings are made, so a typo in a deploy's config fails at
    start-up with a ConfigurationError naming the value and the rule, not on a user's event.
    """

    #: Seconds a user's state lives after their last step; None keeps it forever.
    state_ttl: float | None = None
    #: Seconds a dead process's lock blocks its user (a live holder keeps renewing it).
    lock_ttl: float = 5.0
    #: Seconds an event waits for its user's turn before StateUnavailableError.
    lock_wait_timeout: float = 10.0
    #: Seconds an `event_id` is remembered, so a re-delivered update is skipped.
    dedupe_window: float = 86_400.0
    #: Bytes a stored node may take at most (StateTooLargeError over it); None: no limit.
    state_max_bytes: int | None = None
    #: Events handled at once in this process (users whose turn it is); None: no limit.
    max_concurrent: int | None = None
    #: Events of one user that may wait behind the running one (UserBusyError over it).
    max_waiting_per_user: int | None = None
    #: Seconds a commit keeps retrying while Redis is away; None: `lock_wait_timeout`.
    commit_timeout: float | None = None
    #: Keep the user's lock while a step's replies go out (see `Nodes`).
    lock_during_replies: bool = True
    #: An undeclared transition raises UndeclaredTransitionError instead of a warning.
    strict_transitions: bool = False
    #: Move users out of the botnodes 0.1.0 hash when they are read.
    migrate_legacy: bool = True
    #: Sorted sets the timer schedule is spread over (one Redis Cluster slot each).
    timer_shards: int = 8
    #: Seconds after which a claimed timer that did not fire (its process died) fires again.
    timer_claim_ttl: float = 30.0
    #: Seconds between two looks for due timers.
    timer_poll_interval: float = 0.2
    #: Seconds a timer's claim or step may wait on Redis; past it, if Redis does not answer a
    #: PING either, it is cut and its claim given back (timer_loop.py).
    redis_deadline: float = 5.0

    def __post_init__(self) -> None:
        require_positive("lock_ttl", self.lock_ttl)
        require_positive("lock_wait_timeout", self.lock_wait_timeout)
        require_positive("dedupe_window", self.dedupe_window)
        require_positive("timer_claim_ttl", self.timer_claim_ttl)
        require_positive("timer_poll_interval", self.timer_poll_interval)
        require_positive("redis_deadline", self.redis_deadline)
        if self.state_ttl is not None:
            require_positive("state_ttl", self.state_ttl)
        if self.commit_timeout is not None:
            require_positive("commit_timeout", self.commit_timeout)
        for name, count in (
            ("max_concurrent", self.max_concurrent),
            ("max_waiting_per_user", self.max_waiting_per_user),
            ("state_max_bytes", self.state_max_bytes),
            ("timer_shards", self.timer_shards),
        ):
            if count is not None and not (isinstance(count, int) and count >= 1):
                raise ConfigurationError(f"{name}={count!r} must be a whole number of at least 1")

    @property
    def lock_ttl_ms(self) -> int:
        return math.ceil(self.lock_ttl * 1000)

    @property
    def state_ttl_ms(self) -> int | None:
        return math.ceil(self.state_ttl * 1000) if self.state_ttl else None

    @property
    def dedupe_window_ms(self) -> int:
        return math.ceil(self.dedupe_window * 1000)

    @property
    def timer_claim_ttl_ms(self) -> int:
        return math.ceil(self.timer_claim_ttl * 1000)

    @property
    def commit_deadline(self) -> float:
        """Seconds a commit may take: what a user would wait for their turn, unless told."""
        return self.commit_timeout if self.commit_timeout is not None else self.lock_wait_timeout


class NodesTuning(TypedDict, total=False):
    """The fields of `NodesSettings` as keywords of `Nodes`, as botnodes took them before it.

    A TypedDict (not a second list of defaults) so the keywords can't drift from the settings:
    mypy checks each keyword's type, and `Nodes` knows which ones a caller actually gave.
    """

    state_ttl: float | None
    lock_ttl: float
    lock_wait_timeout: float
    dedupe_window: float
    state_max_bytes: int | None
    max_concurrent: int | None
    max_waiting_per_user: int | None
    commit_timeout: float | None
    lock_during_replies: bool
    strict_transitions: bool
    migrate_legacy: bool
    timer_shards: int
    timer_claim_ttl: float
    timer_poll_interval: float
    redis_deadline: float


TUNING_KEYWORDS = frozenset(field.name for field in fields(NodesSettings))


def settings_from(settings: NodesSettings | None, tuning: NodesTuning) -> NodesSettings:
    """The settings `Nodes` runs with: `settings=` or the loose keywords, never both.

    Both at once would leave a reader guessing which one wins (and a keyword silently losing
    to, or overriding, a shared settings value), so that is a ConfigurationError.
    """
    unknown = sorted(set(tuning) - TUNING_KEYWORDS)
    if unknown:
        raise TypeError(f"Nodes() got an unexpected keyword argument {unknown[0]!r}")
    if settings is None:
        return NodesSettings(**tuning)
    if tuning:
        given = ", ".join(sorted(tuning))
        raise ConfigurationError(
            f"{given} given alongside settings=: set them in the NodesSettings instead"
        )
    return settings


def require_positive(name: str, value: float) -> None:
    """A duration Redis can take as an expiry: above 0 and at most `MAX_TTL_SECONDS`."""
    if not (isinstance(value, int | float) and 0 < value <= MAX_TTL_SECONDS):
        raise ConfigurationError(
            f"{name}={value!r} must be a positive number of seconds, at most {MAX_TTL_SECONDS:g} "
            "(the longest expiry Redis takes)"
        )
