"""`BotContext`: what every node of an aiogram bot can use; a bot's `Ctx` adds its own services.

The runtime builds the parts it owns (the Bot, the users' languages) and hands them to the
bot's `create_ctx`, which adds its settings and services in a subclass (see the owner's
`nodes_types.py`). Nodes then see one typed object and never import the runtime's wiring.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiogram import Bot

from botnodes import after_commit

from .buttons import Buttons
from .i18n import Text
from .language import Languages
from .send_limits import expect_reply


@dataclass(frozen=True, slots=True, kw_only=True)
class BotContext:
    """The runtime's part of a node's context; built once per process."""

    bot: Bot
    #: Each user's language (without Redis: Telegram's report, else the default).
    languages: Languages
    logger: logging.Logger

    async def send_message(
        self, user_id: int, text: Text, reply_markup: Buttons | None = None
    ) -> None:
        """Send a reply, in the user's language, once the transition that produced it is stored.

        Nodes reply through this rather than `bot.send_message`: if the step can't be stored,
        the user is not told it happened; if a reply fails after an irreversible step (an
        order), the step is stored anyway and can't be repeated by the user's next message.
        Outside a transition it sends at once. The words are chosen only now, when the
        user's language (read while the step ran) is known. Counting the reply here lets the
        script that stores the step reserve the chat's send turns for all of its replies.
        """

        async def send() -> None:
            language = await self.languages.of(user_id)
            markup = reply_markup.render(self.languages.catalog, language) if reply_markup else None
            await self.bot.send_message(
                user_id, self.languages.render(language, text), reply_markup=markup
            )

        expect_reply(user_id)
        await after_commit(send, f"the message {text.id!r}")

    def will_reply(self, user_id: int, count: int = 1) -> None:
        """Count replies an `after_commit` action of this step will send later (an order's
        answer): their send turns are then reserved with the step's, by the script that
        stores it, instead of costing a Redis round trip of their own when they go out."""
        for _ in range(count):
            expect_reply(user_id)

    async def aclose(self) -> None:
        """Release what the bot's own services hold (a subclass closes its HTTP clients)."""
