"""`BotDefinition`: everything the runtime needs to know about a bot, handed over by its owner.

The runtime (this package), the dev tools and the test client import nothing from a bot's
package: the bot's `main.py` builds one `BotDefinition` of its nodes, texts, settings and
routers, and hands it to them. That keeps the arrows one way: a bot uses the library, and a
library update never has to know what the bot is called or which nodes it has.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from aiogram import Bot, Router

from botnodes import Node, Nodes

from .context import BotContext
from .events import Event, UserId
from .i18n import Catalog
from .language import Languages
from .settings import BotSettings
from .texts import RUNTIME_TEXT_IDS

CtxT = TypeVar("CtxT", bound=BotContext)
SettingsT = TypeVar("SettingsT", bound=BotSettings)


@dataclass(frozen=True)
class BotDefinition(Generic[CtxT, SettingsT]):
    """A bot: its package, nodes, languages, settings, context and routers."""

    #: The bot's package: `python -m <package>`, where `new-node` writes, the logger's name.
    package: str
    #: Every node under the key it is stored with (keys never change, see nodes/__init__.py).
    nodes_dict: Mapping[str, type[Node[CtxT, Event, UserId, Any]]]
    #: Where the flow begins; the diagram and the flow check start from it.
    start_node: type[Node[CtxT, Event, UserId, Any]]
    #: The node of a user botnodes has never seen (or had to reset).
    get_start_node: Callable[[Event], Node[CtxT, Event, UserId, Any]]
    #: The bot's languages (its `locales/` folder).
    catalog: Catalog
    #: The bot's settings: the runtime's sections and its own.
    settings_class: type[SettingsT]
    #: The nodes' context from the runtime's parts and the settings.
    create_ctx: Callable[[Bot, Languages, SettingsT], CtxT]
    #: The bot's own aiogram routers (commands, the nodes' route), in order.
    build_routers: Callable[[Nodes[CtxT, Event, UserId]], Sequence[Router]]

    def package_dir(self) -> Path:
        """The folder of the bot's package (where `nodes/` and `locales/` are)."""
        module = importlib.import_module(self.package)
        if module.__file__ is None:
            raise ValueError(f"package {self.package!r} has no folder")
        return Path(module.__file__).parent

    def missing_texts(self) -> list[tuple[str, str]]:
        """(language, id) of every text the bot or the runtime uses that a language lacks."""
        return self.catalog.missing(RUNTIME_TEXT_IDS)
