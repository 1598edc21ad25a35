"""botnodes: every user sits on a Node; `Nodes` routes their events and stores state in Redis."""

from .errors import (
    BotnodesError,
    ConfigurationError,
    CorruptStateError,
    LockTimeoutError,
    StateUnavailableError,
    UnregisteredNodeError,
)
from .manager import Nodes, NodesUser
from .node import Node
from .observer import NodesObserver

__all__ = [
    "BotnodesError",
    "ConfigurationError",
    "CorruptStateError",
    "LockTimeoutError",
    "Node",
    "Nodes",
    "NodesObserver",
    "NodesUser",
    "StateUnavailableError",
    "UnregisteredNodeError",
]
