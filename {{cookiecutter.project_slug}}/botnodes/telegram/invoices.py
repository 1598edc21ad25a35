"""What an invoice is and the rules it keeps: the payments' settings, the bot's words, the records.

`PaymentDesk` (payments.py) sends invoices and takes payments; what it sends and decides from
lives here, so a bot's checkout node reads its contract (`Paid`, `PaymentRefused`,
`format_amount`) and its settings (`PaymentSettings`) without the desk's machinery. The payload
of an invoice is `<user id>.<128 random bits>`: not guessable, and it names the record (see
payment_ledger.py) holding who may pay, the currency and amount, the items and the node visit.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings

from .i18n import Text
from .settings import settings_config

#: Telegram's own limits on an invoice.
MAX_TITLE = 32
MAX_DESCRIPTION = 255
MAX_PAYLOAD_BYTES = 128
STARS = "XTR"
#: Currencies without a minor unit (amounts are whole units); others have two decimals here.
_ZERO_DECIMAL = frozenset({STARS, "JPY", "KRW", "VND", "CLP", "ISK", "UGX", "PYG"})
_CURRENCY = re.compile(r"[A-Z]{3}")


class PaymentSettings(BaseSettings):
    """Telegram Payments; off unless PAYMENTS says otherwise (docs/payments.md)."""

    model_config = settings_config()

    payments: Literal["off", "provider", "stars"] = "off"
    payment_provider_token: SecretStr | None = None
    payment_currency: str = "USD"
    # A group that hears of every paid order and every refund to make; empty = none.
    staff_chat_id: int | None = None

    @field_validator("payment_currency")
    @classmethod
    def _iso_4217(cls, value: str) -> str:
        if not _CURRENCY.fullmatch(value):
            raise ValueError("must be a three-letter ISO 4217 code in capitals, like USD")
        return value

    @model_validator(mode="after")
    def _token_with_provider(self) -> PaymentSettings:
        if self.payments == "provider" and self.payment_provider_token is None:
            raise ValueError(
                "PAYMENT_PROVIDER_TOKEN: is required with PAYMENTS=provider "
                "(@BotFather > your bot > Payments)"
            )
        if self.payments == "provider" and self.payment_currency == STARS:
            raise ValueError("PAYMENT_CURRENCY: XTR is Telegram Stars: use PAYMENTS=stars")
        return self

    @property
    def enabled(self) -> bool:
        return self.payments != "off"

    @property
    def currency(self) -> str:
        """The invoices' currency: XTR for Stars, else PAYMENT_CURRENCY."""
        return STARS if self.payments == "stars" else self.payment_currency


class PaymentTexts(Protocol):
    """What the desk says; the bot's `Texts` has these methods (its locales, its words)."""

    def payment_stale(self) -> Text: ...
    def payment_mismatch(self) -> Text: ...
    def payment_already_paid(self) -> Text: ...
    def payment_try_again(self) -> Text: ...
    def payment_ordered(self) -> Text: ...
    def payment_unconfirmed(self) -> Text: ...
    def payment_refunded(self, total: str) -> Text: ...
    def payment_refund_pending(self, total: str) -> Text: ...
    def payment_support(self) -> Text: ...
    def payment_terms(self) -> Text: ...
    def staff_paid(self, user: str, total: str, items: str, charge: str) -> Text: ...
    def staff_refund(self, user: str, total: str, charge: str, reason: str) -> Text: ...


class PaymentRefused(Exception):
    """`fulfil` raises it when the order is finally refused: the payment is refunded."""


class InvoiceRecord(BaseModel):
    """What the bot stored when it sent an invoice; pre-checkout and payment decide from it."""

    user_id: int
    visit: int
    currency: str
    total_amount: int
    items: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class Paid:
    """A successful payment, handed to the bot's `fulfil` (at most once per charge)."""

    user_id: int
    items: list[str]
    currency: str
    total_amount: int
    telegram_payment_charge_id: str
    provider_payment_charge_id: str

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt at this payment's order, on any replica, after a crash."""
        return f"{self.user_id}:paid:{self.telegram_payment_charge_id}"

    def order_field(self) -> dict[str, Any]:
        """The `payment` field of the order sent to the food API."""
        return {
            "currency": self.currency,
            "total_amount": self.total_amount,
            "telegram_payment_charge_id": self.telegram_payment_charge_id,
            "provider_payment_charge_id": self.provider_payment_charge_id,
        }


Fulfil = Callable[[Paid], Awaitable[None]]


def format_amount(amount: int, currency: str) -> str:
    """`1250 USD` as `12.50 USD`, `30 XTR` as `30 XTR`: what the user and staff read."""
    if currency in _ZERO_DECIMAL:
        return f"{amount} {currency}"
    return f"{amount // 100}.{amount % 100:02d} {currency}"


def check_invoice(
    title: str, description: str, payload: str, currency: str, amounts: Sequence[int]
) -> None:
    """Raise ValueError for an invoice Telegram would refuse (before it is sent)."""
    if not 1 <= len(title) <= MAX_TITLE:
        raise ValueError(f"invoice title must be 1-{MAX_TITLE} characters, not {len(title)}")
    if not 1 <= len(description) <= MAX_DESCRIPTION:
        raise ValueError(f"invoice description must be 1-{MAX_DESCRIPTION} characters")
    if not 1 <= len(payload.encode()) <= MAX_PAYLOAD_BYTES:
        raise ValueError(f"invoice payload must be 1-{MAX_PAYLOAD_BYTES} bytes")
    # `type(a) is int`: a bool is an int to Python, never an amount to Telegram.
    if not amounts or any(type(a) is not int or a <= 0 for a in amounts):
        raise ValueError("invoice amounts must be positive whole numbers of the smallest unit")
    if currency == STARS and len(amounts) != 1:
        raise ValueError("an invoice in Telegram Stars has exactly one price")


def parse_payload(payload: str) -> tuple[int, str]:
    """The user id and nonce of an invoice's payload; (0, "") for anything not ours."""
    user, _, nonce = payload.partition(".")
    if not user.isdigit() or not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", nonce):
        return 0, ""
    return int(user), nonce


def read_record(raw: Any) -> InvoiceRecord | None:
    """The stored invoice record, or None if there is none or it is unreadable."""
    if not raw:
        return None
    try:
        return InvoiceRecord.model_validate_json(raw)
    except ValidationError:
        return None
