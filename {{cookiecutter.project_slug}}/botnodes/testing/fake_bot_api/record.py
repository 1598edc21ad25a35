"""What the stand-in keeps of a conversation: the calls, the messages as they are now, the presses.

Tests read it to see what the bot did (`sent_texts`, `delivered`, `attempts`); the method
handlers (chats.py, invoices.py) add to it, so it is their common base.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from .calls import ApiCall, Params, unique_ids


@dataclass
class Record:
    """Every call taken, every message delivered, every press handed out."""

    calls: list[ApiCall] = field(default_factory=list)
    #: Every delivered message by id, as Telegram returned it (with its reply_markup).
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Callback query ids handed out by `press_update`, and how often each was answered.
    answers: dict[str, list[Params]] = field(default_factory=dict)
    #: Delivered texts per chat, kept as they arrive so a long run can look one chat up fast.
    texts: dict[int, list[str]] = field(default_factory=dict)
    _message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _query_ids: itertools.count[int] = field(default_factory=unique_ids)

    def delivered(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """Every message Telegram took (as it is now), optionally only those to `chat_id`."""
        return [
            message
            for message in self.messages.values()
            if chat_id is None or message["chat"]["id"] == chat_id
        ]

    def sent_texts(self, chat_id: int | None = None) -> list[str]:
        """Texts of every delivered sendMessage so far, optionally only those to `chat_id`."""
        if chat_id is not None:
            return list(self.texts.get(chat_id, []))
        return [
            str(call.params["text"])
            for call in self.calls
            if call.ok and call.method == "sendMessage"
        ]

    def forget(self) -> None:
        """Drop everything recorded so far (long runs: the record must not grow forever)."""
        self.calls.clear()
        self.messages.clear()
        self.answers.clear()
        self.texts.clear()

    def attempts(self, method: str) -> list[ApiCall]:
        """Every call of `method`, delivered or refused."""
        return [call for call in self.calls if call.method == method]

    def unanswered_presses(self) -> list[str]:
        """Callback query ids handed out by `press_update` that were never answered."""
        return [query_id for query_id, answers in self.answers.items() if not answers]
