"""Test your bot without Telegram: a Bot API stand-in that keeps Telegram's rules, and a client.

- `BotTestClient` (client.py) drives the real dispatcher, routers, nodes and botnodes on a real
  Redis: `await alice.send("Yes")`, `await alice.click("Finish")`, `await alice.node()`.
- `FakeTelegram`, `FakeSession` and `FakeBotAPIServer` (fake_bot_api/) stand in for the Bot
  API in process or over HTTP on 127.0.0.1, and say no like Telegram does: messages over 4,096
  characters, callback data over 64 bytes, a second answer to a button press, and on request
  429 with `retry_after`, 5xx and dropped connections, and Telegram's flood control
  (`enforce_rates()`). Invoices are checked like Telegram's, and `await alice.pay()` pays one.
"""

from .client import BotTestClient, Payment, Reply, TestUser
from .fake_bot_api import (
    ApiCall,
    FakeBotAPIServer,
    FakeSession,
    FakeTelegram,
    TelegramRates,
    callback_update,
    message_update,
)

__all__ = [
    "ApiCall",
    "BotTestClient",
    "FakeBotAPIServer",
    "FakeSession",
    "FakeTelegram",
    "Payment",
    "Reply",
    "TelegramRates",
    "TestUser",
    "callback_update",
    "message_update",
]
