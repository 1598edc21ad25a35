"""Exceptions botnodes raises, so callers can tell misuse from an outage."""

from __future__ import annotations


class BotnodesError(Exception):
    """Base class of every error botnodes raises on purpose."""


class ConfigurationError(BotnodesError, ValueError):
    """`Nodes` was built with a registry or option that can never work.

    Raised at construction time so a typo fails the deploy, not the first user.
    """


class UnregisteredNodeError(BotnodesError, TypeError):
    """A node class that is not in `nodes_dict` was returned or stored.

    Its state could be written but never read back, so it is refused.
    """


class CorruptStateError(BotnodesError):
    """A stored value cannot be turned back into a node; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StateUnavailableError(BotnodesError):
    """The user's state could not be read or locked, so the event was not processed.

    Nothing was changed: the caller may tell the user to try again.
    """


class LockTimeoutError(StateUnavailableError):
    """Another handler kept the user's lock longer than `lock_wait_timeout`."""
