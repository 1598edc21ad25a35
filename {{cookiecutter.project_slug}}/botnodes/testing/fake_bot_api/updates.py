"""The updates a user causes (a message, a button press), as Telegram's JSON.

Shared by the in-process client, the HTTP server's `push_message` and the payments, so every
update carries a sender the way Telegram writes one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .calls import Params


def user_json(
    user_id: int,
    username: str | None,
    first_name: str,
    last_name: str | None,
    language_code: str | None = None,
) -> Params:
    """A Telegram `User` as a sender: the optional fields left out, as Telegram leaves them."""
    user: Params = {"id": user_id, "is_bot": False, "first_name": first_name}
    if username is not None:
        user["username"] = username
    if last_name is not None:
        user["last_name"] = last_name
    if language_code is not None:  # Telegram leaves it out when it doesn't know
        user["language_code"] = language_code
    return user


def user_args(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`user_json`'s arguments from a caller's `**fields`, with the same defaults (Alice)."""
    return {
        "username": fields.get("username", "alice"),
        "first_name": fields.get("first_name", "Alice"),
        "last_name": fields.get("last_name"),
        "language_code": fields.get("language_code"),
    }


def message_update(
    update_id: int,
    user_id: int,
    text: str | None,
    *,
    username: str | None = "alice",
    first_name: str = "Alice",
    last_name: str | None = None,
    chat_type: str = "private",
    language_code: str | None = None,
) -> dict[str, Any]:
    """A Bot API `Update` with a message; `text=None` sends a location instead of text."""
    chat_id = user_id if chat_type == "private" else -1000000000000 - user_id
    chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
    if chat_type != "private":
        chat["title"] = "A group"
    message: dict[str, Any] = {
        "message_id": update_id,
        "date": int(time.time()),
        "chat": chat,
        "from": user_json(user_id, username, first_name, last_name, language_code),
    }
    if text is None:
        message["location"] = {"latitude": 52.52, "longitude": 13.40}
    else:
        message["text"] = text
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    return {"update_id": update_id, "message": message}


def callback_update(
    update_id: int,
    user_id: int,
    data: str,
    message: Mapping[str, Any],
    query_id: str,
    *,
    username: str | None = "alice",
    first_name: str = "Alice",
    last_name: str | None = None,
    language_code: str | None = None,
) -> dict[str, Any]:
    """A Bot API `Update` with a callback query: `user_id` pressed a button of `message`."""
    return {
        "update_id": update_id,
        "callback_query": {
            "id": query_id,
            "from": user_json(user_id, username, first_name, last_name, language_code),
            "chat_instance": str(user_id),
            "message": dict(message),
            "data": data,
        },
    }
