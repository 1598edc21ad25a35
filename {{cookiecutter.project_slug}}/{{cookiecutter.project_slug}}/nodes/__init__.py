"""The bot's nodes and the keys they are stored under.

A user's state is stored in Redis together with the KEY of their node, and read back by it.
Renaming a key (or removing a node) strands every user currently on it: botnodes then resets
them to the start node. So keys never change, even when a class or module is renamed; to
rename a key anyway, register the new one here and map the old one to it with
`Nodes(key_aliases={"old_key": "new_key"})` until no stored state uses the old key.
"""

from __future__ import annotations

from typing import Any

from botnodes import Node

from ..nodes_types import Ctx, Event, UserId
from .checkout import Checkout
from .hold import Hold
from .hungry import Hungry
from .start import Start

__all__ = ["Checkout", "Hold", "Hungry", "Start", "nodes_dict"]

nodes_dict: dict[str, type[Node[Ctx, Event, UserId, Any]]] = {
    "start": Start,
    "hungry": Hungry,
    "hold": Hold,
    "checkout": Checkout,
}
