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


class UndeclaredTransitionError(BotnodesError):
    """A node returned a node its `on_event` annotation does not declare (strict mode).

    Raised out of `route` so a test fails loudly; in production it is only logged.
    """


class UserBusyError(StateUnavailableError):
    """The user already has `max_waiting_per_user` events queued; this one was not processed.

    It keeps one user's flood from occupying the slots every other user needs.
    """


class TransitionLostError(BotnodesError):
    """The node ran, but its result could not be stored: the user is where they were before.

    Unlike StateUnavailableError, the node may have acted (an order placed): replies it
    queued were dropped, and the caller should tell the user the step did not go through.
    Effects keyed by `Node.visit` are safe to repeat, since the stored visit did not change.
    """


class StateTooLargeError(TransitionLostError):
    """The node's data is over `state_max_bytes`, so the step was not stored.

    The user stays where they were, with their data as it was; `size` and `limit` are bytes.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
