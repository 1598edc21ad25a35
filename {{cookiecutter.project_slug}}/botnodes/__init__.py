"""botnodes: every user sits on a Node; `Nodes` routes their events and stores state in Redis."""

from .errors import (
    BotnodesError,
    ConfigurationError,
    CorruptStateError,
    LockTimeoutError,
    StateTooLargeError,
    StateUnavailableError,
    TransitionLostError,
    UndeclaredTransitionError,
    UnregisteredNodeError,
    UserBusyError,
)
from .graph import ByTimer, FlowGraph
from .node import Node
from .nodes import Nodes
from .nodes_user import NodesUser
from .observer import NodesObserver
from .outbox import after_commit, watch_stored
from .settings import NodesSettings
from .step import Outcome
from .storage import MAX_TTL_SECONDS

__all__ = [
    "MAX_TTL_SECONDS",
    "BotnodesError",
    "ByTimer",
    "ConfigurationError",
    "CorruptStateError",
    "FlowGraph",
    "LockTimeoutError",
    "Node",
    "Nodes",
    "NodesObserver",
    "NodesSettings",
    "NodesUser",
    "Outcome",
    "StateTooLargeError",
    "StateUnavailableError",
    "TransitionLostError",
    "UndeclaredTransitionError",
    "UnregisteredNodeError",
    "UserBusyError",
    "after_commit",
    "watch_stored",
]
