"""What the payment tests share: a food API that quotes and records paid orders, and helpers.

The bots themselves (`stars`, `provider`) are fixtures in conftest.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import SecretStr

from botnodes.telegram.invoices import PaymentSettings
from botnodes.testing import BotTestClient, Reply, TestUser

from {{ cookiecutter.project_slug }}.settings import Settings

ALICE = 1001
BOB = 1002
STAFF = -1001234567890
PROVIDER_TOKEN = "284685063:TEST:provider-token-never-shown"
MAIN_MENU = "Again main menu! Are you hungry?"
ORDERED = "Ordered!"
STALE = "This invoice is out of date. Please order again."
MISMATCH = "This invoice doesn't match your order."
ALREADY_PAID = "This invoice is already paid."
#: What the food API in these tests asks for each dish (smallest units of the currency).
PRICES = {"Pizza": 1250, "Sushi": 899}


class PaidFoodAPI:
    """A food API that quotes `PRICES` and records paid orders; refuses or fails on demand."""

    def __init__(self) -> None:
        self.orders: list[dict[str, Any]] = []
        self.quotes: list[list[str]] = []
        #: The next orders raise these (a final no, or not answered), then orders go through.
        self.errors: list[Exception] = []
        #: With `hold`, an order waits for `release` (`in_flight` is set meanwhile).
        self.hold = False
        self.in_flight = asyncio.Event()
        self.release = asyncio.Event()

    async def order_food(
        self,
        user_id: int,
        items: Sequence[str],
        *,
        idempotency_key: str,
        payment: Mapping[str, Any] | None = None,
    ) -> None:
        if self.hold:
            self.in_flight.set()
            await self.release.wait()
        if self.errors:
            raise self.errors.pop(0)
        self.orders.append(
            {"user_id": user_id, "items": list(items), "key": idempotency_key, "payment": payment}
        )

    async def quote(self, user_id: int, items: Sequence[str]) -> list[tuple[str, int]]:
        self.quotes.append(list(items))
        return [(item, PRICES.get(item, 100)) for item in items]

    async def close(self) -> None:
        """Nothing to release."""


def with_payments(settings: Settings, mode: str, **changes: Any) -> Settings:
    """`settings` with PAYMENTS=`mode`, a staff chat, and for a provider its test token."""
    fields: dict[str, Any] = {"payments": mode, "staff_chat_id": STAFF, **changes}
    if mode == "provider":
        fields.setdefault("payment_provider_token", SecretStr(PROVIDER_TOKEN))
    return dataclasses.replace(settings, payments=PaymentSettings(_env_file=None, **fields))


def texts(replies: Sequence[Reply]) -> list[str]:
    return [reply.text for reply in replies]


def staff_texts(client: BotTestClient) -> list[str]:
    return client.telegram.sent_texts(STAFF)


def last_invoice(user: TestUser) -> Reply:
    """The newest invoice message to `user`, to pay it later (`user.pay(invoice=...)`)."""
    return next(reply for reply in reversed(user.replies()) if reply.text.startswith("Invoice:"))


def payment_updates(client: BotTestClient, user_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pre-checkout and payment updates of paying `user_id`'s newest invoice, unsent."""
    _, invoice = client.telegram.last_invoice(user_id)
    ids = (client.next_update_id(), client.next_update_id())
    return client.telegram.pay_updates(ids, user_id, invoice)


def charge_of(paid: Mapping[str, Any]) -> str:
    return str(paid["message"]["successful_payment"]["telegram_payment_charge_id"])


async def checkout(user: TestUser, *items: str) -> list[Reply]:
    """From the greeting to the invoice: the replies to Finish."""
    await user.send("hi")
    await user.click("Yes")
    for item in items:
        await user.send(item)
    return await user.click("Finish")
