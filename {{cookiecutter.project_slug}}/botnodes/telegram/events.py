"""What reaches a bot's nodes, and what the runtime reads from it.

`Event` is a text message or a press of a node's button; both carry the user, and a press also
carries the node visit its button was shown on, so botnodes can tell a stale one.
"""

from __future__ import annotations

from typing import TypeAlias

from aiogram.types import CallbackQuery, Message

from .buttons import unpack_press

#: What reaches the nodes: a text message, or a press of one of their buttons.
Event: TypeAlias = Message | CallbackQuery
UserId: TypeAlias = int


def event_to_user_id(event: Event) -> UserId:
    """The Telegram user an event belongs to; botnodes keys the state by it."""
    if isinstance(event, CallbackQuery):
        return event.from_user.id
    # Only private chats reach the nodes, and there the chat id is the user id.
    return event.from_user.id if event.from_user else event.chat.id


def said(event: Event) -> str | None:
    """What the user typed, or the word of the button they pressed: nodes compare this.

    A press and typing its word are the same to a node, so every button also works typed.
    """
    if isinstance(event, CallbackQuery):
        press = unpack_press(event)
        return press.word if press else None
    return event.text


def event_visit(event: Event) -> int | None:
    """The node visit a button was shown on; None for typed text (botnodes' `event_visit`)."""
    if isinstance(event, CallbackQuery):
        press = unpack_press(event)
        return press.visit if press else None
    return None


def event_id(event: Event) -> str:
    """What identifies this very update for its user (botnodes' `event_id`).

    Telegram sends an update again when it saw no answer (a webhook delivery that failed, a
    poller that died before confirming it); botnodes then finds the id among the user's
    handled events and does nothing. A message id is unique in its chat, a query id for all.
    """
    if isinstance(event, CallbackQuery):
        return f"c{event.id}"
    return f"m{event.message_id}"


def user_display_name(event: Event) -> str:
    """How to greet the sender: the @username if set, else the name Telegram shows."""
    user = event.from_user
    if user is None:
        return "friend"
    return user.username or user.full_name
