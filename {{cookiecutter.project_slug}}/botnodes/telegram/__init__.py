"""botnodes on aiogram 3: the runtime a bot's `main.py` hands its nodes to.

A bot imports what it writes nodes with from here; the rest of this package (polling and
webhooks, Telegram's limits, shared send limits, broadcast, languages, metrics, the command
line) works from the `BotDefinition` the bot hands over, and never imports the bot.
"""

from .buttons import Buttons, buttons
from .context import BotContext
from .definition import BotDefinition
from .dispatcher import IsTextMessage
from .events import Event, UserId, event_id, event_to_user_id, said, user_display_name
from .i18n import Catalog, Text

__all__ = [
    "BotContext",
    "BotDefinition",
    "Buttons",
    "Catalog",
    "Event",
    "IsTextMessage",
    "Text",
    "UserId",
    "buttons",
    "event_id",
    "event_to_user_id",
    "said",
    "user_display_name",
]
