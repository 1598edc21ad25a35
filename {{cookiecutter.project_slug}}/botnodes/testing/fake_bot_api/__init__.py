"""A stand-in for the Telegram Bot API that keeps Telegram's rules, in process or over HTTP.

`FakeTelegram` answers the Bot API methods this bot uses with valid objects, records every call
and refuses what Telegram refuses: a message longer than 4,096 characters or empty, callback
data over 64 bytes, a callback query answered twice or with more than 200 characters, editing
a message that does not exist or not changing it. `fail()` makes chosen calls answer 429 with
`retry_after`, a 5xx, or drop the connection, the way Telegram does now and then.
`enforce_rates()` makes it answer 429 the way Telegram's flood control does when a bot sends
faster than its global or per-chat rate (off unless asked for).

It also takes payments as Telegram does: invoices checked against Telegram's rules,
`pay_updates` for the updates a paying user causes, pre-checkout answers taken once, a charge
refunded once.

`FakeSession` plugs it into an aiogram `Bot` (no network, for `Dispatcher.feed_update`);
`FakeBotAPIServer` serves it on 127.0.0.1 for a bot process started with TELEGRAM_API_URL,
including the long-polling `getUpdates` that `push_message` and `push_press` feed.

The story, one idea a module: calls.py (a call and how Telegram ends one), record.py (what was
delivered), chats.py (messages and presses), invoices.py (payments), faults.py (failures on
request, flood control), fake_telegram.py (a call answered), updates.py (what users send),
session.py (in process), server.py (over HTTP).

Its modules import nothing of botnodes, only each other (relatively): the template's benchmark
and compose tests load this package by its path into processes that have no bake installed (or
an older bake, for `--baseline`).
"""

from .calls import (
    BOT_USER,
    ApiCall,
    Dropped,
    Params,
    Refusal,
    Stalled,
    UnknownMethodError,
    unique_ids,
)
from .chats import MAX_CALLBACK_ANSWER_LENGTH, MAX_CALLBACK_DATA_BYTES, MAX_MESSAGE_LENGTH
from .fake_telegram import FakeTelegram
from .faults import RATED_METHODS, Latency, TelegramRates
from .invoices import MAX_INVOICE_DESCRIPTION, MAX_INVOICE_PAYLOAD_BYTES, MAX_INVOICE_TITLE, STARS
from .server import FakeBotAPIServer
from .session import FakeSession
from .updates import callback_update, message_update

__all__ = [
    "BOT_USER",
    "MAX_CALLBACK_ANSWER_LENGTH",
    "MAX_CALLBACK_DATA_BYTES",
    "MAX_INVOICE_DESCRIPTION",
    "MAX_INVOICE_PAYLOAD_BYTES",
    "MAX_INVOICE_TITLE",
    "MAX_MESSAGE_LENGTH",
    "RATED_METHODS",
    "STARS",
    "ApiCall",
    "Dropped",
    "FakeBotAPIServer",
    "FakeSession",
    "FakeTelegram",
    "Latency",
    "Params",
    "Refusal",
    "Stalled",
    "TelegramRates",
    "UnknownMethodError",
    "callback_update",
    "message_update",
    "unique_ids",
]
