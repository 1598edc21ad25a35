"""The texts the runtime itself says, whatever node a user is on.

Each is an id every language of the bot must have in its `bot.ftl` (the bot's own texts are in
its `texts.py`); `Catalog.missing` finds a missing one at start-up, not in front of a user.
"""

from __future__ import annotations

from .i18n import Text


class RuntimeTexts:
    """One method per text, like the bot's own `Texts`, so mypy checks every use."""

    def not_text(self) -> Text:
        """A sticker, photo... reached the nodes, which read text."""
        return Text("not-text")

    def stale_press(self) -> Text:
        return Text("stale-press")

    def state_unavailable(self) -> Text:
        return Text("state-unavailable")

    def user_busy(self) -> Text:
        return Text("user-busy")

    def transition_lost(self) -> Text:
        return Text("transition-lost")

    def state_too_large(self) -> Text:
        return Text("state-too-large")

    def language_name(self) -> Text:
        """The language's own name, on its `/language` button."""
        return Text("language-name")

    def language_menu(self) -> Text:
        return Text("language-menu")

    def language_chosen(self) -> Text:
        return Text("language-chosen")


RUNTIME_TEXTS = RuntimeTexts()

#: Every id the runtime renders: each language of a bot must have them all.
RUNTIME_TEXT_IDS = tuple(
    getattr(RUNTIME_TEXTS, name)().id for name in vars(RuntimeTexts) if not name.startswith("_")
)
