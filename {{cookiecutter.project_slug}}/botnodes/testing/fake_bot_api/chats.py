"""Messages and button presses, answered as Telegram does and refused where Telegram refuses.

A message longer than 4,096 characters or empty, callback data over 64 bytes, a press answered
twice or with more than 200 characters, an edit of a message that does not exist or that changes
nothing: each answers Telegram's 400, so a bot that passes here passes there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from .calls import BOT_USER, Params, Refusal
from .record import Record
from .updates import callback_update

#: Telegram's limits on messages and buttons.
MAX_MESSAGE_LENGTH = 4096
MAX_CALLBACK_DATA_BYTES = 64
MAX_CALLBACK_ANSWER_LENGTH = 200


@dataclass
class Chats(Record):
    """sendMessage, answerCallbackQuery, the edits, and the presses a user makes."""

    def _send_message(self, params: Params) -> dict[str, Any]:
        text = str(params.get("text", ""))
        _check_text(text)
        markup = _markup(params.get("reply_markup"))
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": int(params["chat_id"]), "type": "private"},
            "from": BOT_USER,
            "text": text,
        }
        if markup is not None:
            message["reply_markup"] = markup
        self.messages[message["message_id"]] = message
        self.texts.setdefault(message["chat"]["id"], []).append(text)
        return message

    def _answer_callback_query(self, params: Params) -> bool:
        query_id = str(params.get("callback_query_id"))
        if query_id not in self.answers or self.answers[query_id]:
            raise Refusal(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        if len(str(params.get("text") or "")) > MAX_CALLBACK_ANSWER_LENGTH:
            raise Refusal(400, "Bad Request: MESSAGE_TOO_LONG")
        self.answers[query_id].append(params)
        return True

    def _edit_message(self, method: str, params: Params) -> dict[str, Any]:
        message = self.messages.get(int(params.get("message_id", 0)))
        if message is None:
            raise Refusal(400, "Bad Request: message to edit not found")
        edited = dict(message)
        if method == "editMessageText":
            edited["text"] = str(params.get("text", ""))
            _check_text(edited["text"])
        markup = _markup(params.get("reply_markup"))
        edited.pop("reply_markup", None)
        if markup is not None:
            edited["reply_markup"] = markup
        if edited == message:
            raise Refusal(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        self.messages[message["message_id"]] = edited
        return edited

    def press_update(
        self,
        update_id: int,
        user_id: int,
        button: str,
        message_id: int | None = None,
        **user_fields: Any,
    ) -> dict[str, Any]:
        """An Update pressing the button labelled `button` on the newest message showing it
        (or on message `message_id`, however old).

        Raises LookupError (naming the buttons there are) if no message to the user has it.
        """
        shown: list[str] = []
        for message in reversed(list(self.messages.values())):
            if message["chat"]["id"] != user_id or message_id not in (None, message["message_id"]):
                continue
            for row in message.get("reply_markup", {}).get("inline_keyboard", []):
                for key in row:
                    if key["text"] == button:
                        query_id = f"q{next(self._query_ids)}"
                        self.answers[query_id] = []
                        return callback_update(
                            update_id, user_id, key["callback_data"], message, query_id,
                            **user_fields,
                        )  # fmt: skip
                    shown.append(key["text"])
        raise LookupError(
            f"no message to user {user_id} has a button {button!r} (buttons shown: {shown})"
        )


def _check_text(text: str) -> None:
    if not text.strip():
        raise Refusal(400, "Bad Request: message text is empty")
    if len(text) > MAX_MESSAGE_LENGTH:
        raise Refusal(400, "Bad Request: message is too long")


def _markup(raw: Any) -> dict[str, Any] | None:
    """The reply_markup as Telegram stores it; refuses callback data outside 1..64 bytes."""
    if raw is None:
        return None
    markup = json.loads(raw) if isinstance(raw, str) else dict(raw)
    for row in markup.get("inline_keyboard", []):
        for key in row:
            data = key.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA_BYTES:
                raise Refusal(400, "Bad Request: BUTTON_DATA_INVALID")
    return markup
