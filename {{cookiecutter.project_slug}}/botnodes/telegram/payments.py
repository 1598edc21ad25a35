"""Telegram Payments with exactly-once fulfilment: invoices, pre-checkout, payment, refund.

A bot's checkout node sends an invoice with `PaymentDesk.send_invoice`; this module does what
makes it exact, whatever node the user is on by then:

- The invoice's payload is `<user id>.<128 random bits>`: not guessable, and it names a record
  in Redis (under the user's hash tag) holding who may pay, the currency and amount, the items
  and the node visit the invoice belongs to. It is kept `RECORD_TTL`.
- `pre_checkout_query` is answered from that record and the user's stored node alone: ok only
  for this user, the invoiced currency and amount, unpaid, and while the user is still on the
  visit that sent it (Cancel, the cart's expiry or /start end the visit: the invoice is stale).
  It never waits for the user's turn, and gives up on Redis after `decide_within` seconds
  with a polite "try again", so Telegram's 10-second deadline is met.
- `successful_payment` claims the charge (by `telegram_payment_charge_id`) in one script: a
  re-delivered update, or the same update on another replica, finds it claimed or done and
  does nothing. A claim left by a crash expires after `claim_ttl`, and the re-delivery tries
  again with the same `Idempotency-Key` (`Paid.idempotency_key`), so the food API takes it once.
- A second charge for an invoice already paid, or an order the bot's `fulfil` finally refuses
  (`PaymentRefused`), is refunded once: `refundStarPayment` for Stars (an answer of
  CHARGE_ALREADY_REFUNDED counts as done); a provider payment is refunded by the staff, who
  hear of it in STAFF_CHAT_ID, and the user is told a refund is on its way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aiogram import F, Router
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters import Command
from aiogram.types import LabeledPrice, Message, PreCheckoutQuery
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings
from redis.exceptions import RedisError

from ..codec import VISIT_FIELD
from .events import event_id
from .i18n import Text
from .language import Languages
from .settings import settings_config

if TYPE_CHECKING:
    from aiogram import Bot

    from botnodes import Node, Nodes

logger = logging.getLogger(__name__)

#: Telegram's own limits on an invoice.
MAX_TITLE = 32
MAX_DESCRIPTION = 255
MAX_PAYLOAD_BYTES = 128
STARS = "XTR"
#: Telegram cancels a payment whose pre-checkout query is not answered within 10 s.
PRE_CHECKOUT_DEADLINE = 10.0
#: How long invoice and charge records are kept (an invoice can't be paid after it goes stale).
RECORD_TTL = 30 * 86_400
#: Currencies without a minor unit (amounts are whole units); others have two decimals here.
#: Waits between tries to claim a paid charge while Redis is away (about a minute in all).
CLAIM_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
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


# KEYS: the invoice record, who paid it, the user's stored node. Read-only: what pre-checkout
# decides from.
_READ = """
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}
"""

# KEYS: invoice record, who paid it, the charge. ARGV: charge id, claim ms, keep ms.
# Returns {verdict, record}: done:<state> (handled before), busy (claimed, being handled),
# unknown (no such invoice), first (this charge pays it), second (paid by another charge).
_CLAIM = """
local state = redis.call('GET', KEYS[3])
if state == 'claimed' then return {'busy', ''} end
if state then return {'done:' .. state, ''} end
local record = redis.call('GET', KEYS[1])
if not record then return {'unknown', ''} end
redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[3])
redis.call('SET', KEYS[3], 'claimed', 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[1] then return {'first', record} end
return {'second', record}
"""

Runner = Callable[[Any, list[str], list[str]], Awaitable[Any]]


class PaymentDesk:
    """Sends invoices and handles what Telegram sends back; one per process (in the ctx)."""

    def __init__(
        self,
        bot: Bot,
        languages: Languages,
        settings: PaymentSettings,
        texts: PaymentTexts,
        *,
        key_prefix: str,
        decide_within: float = 5.0,
        claim_ttl: float = 300.0,
    ) -> None:
        self.bot = bot
        self.languages = languages
        self.settings = settings
        self.texts = texts
        self._prefix = key_prefix
        #: Seconds pre-checkout may spend deciding; the rest of Telegram's 10 s is for answering.
        self.decide_within = decide_within
        #: A charge claimed by a process that died is handled again after this long.
        self.claim_ttl = claim_ttl
        self._run: Runner | None = None
        self._read: Any = None
        self._claim: Any = None
        self._fulfil: Fulfil | None = None
        self._then: Callable[[], Node[Any, Any, Any, Any]] | None = None
        self._nodes: Nodes[Any, Any, Any] | None = None

    @property
    def currency(self) -> str:
        return self.settings.currency

    # Keys: under the user's hash tag, next to their state (one Redis Cluster slot).
    def _state_key(self, user_id: int) -> str:
        return f"{self._prefix}:{{{user_id}}}"

    def _invoice_key(self, user_id: int, nonce: str) -> str:
        return f"{self._state_key(user_id)}:invoice:{nonce}"

    def _charge_key(self, user_id: int, charge_id: str) -> str:
        return f"{self._state_key(user_id)}:charge:{charge_id}"

    def bind(
        self,
        nodes: Nodes[Any, Any, Any],
        fulfil: Fulfil,
        then: Callable[[], Node[Any, Any, Any, Any]],
    ) -> Router:
        """The router for pre-checkout, payments, /paysupport and /terms; nothing works before.

        `fulfil` places a paid order (raising `PaymentRefused` for a final no); `then` is the
        node a user still on the paid invoice's visit goes to once the order is placed.
        """
        self._nodes = nodes
        self._run = nodes.run_script
        redis = nodes.redis
        self._read = redis.register_script(_READ)
        self._claim = redis.register_script(_CLAIM)
        self._fulfil = fulfil
        self._then = then
        return self._router()

    async def _script(self, script: Any, keys: list[str], args: list[str]) -> Any:
        if self._run is None:
            raise RuntimeError("PaymentDesk.bind(nodes, ...) was not called")
        return await self._run(script, keys, args)

    async def send_invoice(
        self,
        user_id: int,
        visit: int,
        *,
        title: Text,
        description: Text,
        lines: Sequence[tuple[str, int]],
        items: Sequence[str],
    ) -> None:
        """Store the invoice's record, then send it; call it through `after_commit`."""
        language = await self.languages.of(user_id)
        title_text = self.languages.render(language, title)[:MAX_TITLE]
        description_text = self.languages.render(language, description)[:MAX_DESCRIPTION]
        nonce = secrets.token_urlsafe(16)
        payload = f"{user_id}.{nonce}"
        if self.currency == STARS and len(lines) > 1:  # Telegram takes one price in Stars
            lines = [(title_text, sum(amount for _, amount in lines))]
        amounts = [amount for _, amount in lines]
        check_invoice(title_text, description_text, payload, self.currency, amounts)
        record = InvoiceRecord(
            user_id=user_id,
            visit=visit,
            currency=self.currency,
            total_amount=sum(amounts),
            items=list(items),
        )
        redis = self._redis_client()
        await redis.set(
            self._invoice_key(user_id, nonce), record.model_dump_json(), px=RECORD_TTL * 1000
        )
        token = self.settings.payment_provider_token
        await self.bot.send_invoice(
            user_id,
            title=title_text,
            description=description_text,
            payload=payload,
            currency=self.currency,
            prices=[
                LabeledPrice(label=label[:64] or "-", amount=amount) for label, amount in lines
            ],
            provider_token=token.get_secret_value() if token and self.currency != STARS else "",
        )

    def _redis_client(self) -> Any:
        if self._nodes is None:
            raise RuntimeError("PaymentDesk.bind(nodes, ...) was not called")
        return self._nodes.redis

    # Pre-checkout: within the deadline, from stored state, never behind the user's queue.
    async def pre_checkout(self, query: PreCheckoutQuery) -> None:
        started = time.monotonic()
        reason: Text | None
        try:
            async with asyncio.timeout(self.decide_within):
                reason = await self._refusal(query)
        except (TimeoutError, RedisError, OSError) as exc:
            logger.warning("Pre-checkout %s not decided in time: %r", query.id, exc)
            reason = self.texts.payment_try_again()
        error = None
        if reason is not None:
            language = self.languages.reported(query.from_user) or self.languages.default
            with contextlib.suppress(TimeoutError, RedisError, OSError):
                async with asyncio.timeout(1.0):
                    language = await self.languages.of(query.from_user.id)
            error = self.languages.render(language, reason)
        left = PRE_CHECKOUT_DEADLINE - (time.monotonic() - started)
        try:
            async with asyncio.timeout(max(left, 0.5)):
                await self.bot.answer_pre_checkout_query(
                    query.id, ok=reason is None, error_message=error
                )
        except (TimeoutError, TelegramAPIError) as exc:
            logger.error("Pre-checkout %s could not be answered: %r", query.id, exc)

    async def _refusal(self, query: PreCheckoutQuery) -> Text | None:
        """None if the query may go on, else why not (in the bot's words)."""
        user_id, nonce = _parse_payload(query.invoice_payload)
        if user_id != query.from_user.id or not nonce:
            return self.texts.payment_mismatch()
        raw_record, paid_by, raw_state = await self._script(
            self._read,
            [
                self._invoice_key(user_id, nonce),
                self._invoice_key(user_id, nonce) + ":paid",
                self._state_key(user_id),
            ],
            [],
        )
        record = _record(raw_record)
        if record is None:
            return self.texts.payment_mismatch()
        if query.currency != record.currency or query.total_amount != record.total_amount:
            return self.texts.payment_mismatch()
        if paid_by:
            return self.texts.payment_already_paid()
        if _visit(raw_state) != record.visit:
            return self.texts.payment_stale()
        return None

    # The payment: exactly one order (or one refund) per charge.
    async def successful_payment(self, message: Message) -> None:
        payment = message.successful_payment
        if payment is None or message.from_user is None:
            return
        user_id, nonce = _parse_payload(payment.invoice_payload)
        charge = payment.telegram_payment_charge_id
        if user_id != message.from_user.id:
            user_id = message.from_user.id
        invoice_key = self._invoice_key(user_id, nonce)
        keys = [invoice_key, invoice_key + ":paid", self._charge_key(user_id, charge)]
        args = [charge, str(int(self.claim_ttl * 1000)), str(RECORD_TTL * 1000)]
        # Money has moved: a Redis that is away for a moment is waited for, not given up on
        # (a polling bot is not sent this update again once its handler returned).
        for delay in (*CLAIM_RETRIES, None):
            try:
                verdict, raw = await self._script(self._claim, keys, args)
                break
            except (RedisError, OSError) as exc:
                if delay is None:
                    logger.critical("Payment %s of user %s not handled: %r", charge, user_id, exc)
                    raise
                logger.warning("Payment %s: Redis away (%r); again in %s s", charge, exc, delay)
                await asyncio.sleep(delay)
        verdict = _text(verdict)
        if verdict not in {"first", "second"}:
            logger.info("Payment %s of user %s not handled again: %s", charge, user_id, verdict)
            if verdict == "unknown":
                await self._staff_refund(
                    message, payment.total_amount, payment.currency, "unknown invoice"
                )
            return
        record = _record(raw)
        if record is None:  # unreadable: refund rather than guess
            await self._refund(message, "unreadable invoice record")
            return
        if verdict == "second":
            await self._refund(message, "the invoice was already paid")
            return
        paid = Paid(
            user_id=user_id,
            items=record.items,
            currency=payment.currency,
            total_amount=payment.total_amount,
            telegram_payment_charge_id=charge,
            provider_payment_charge_id=payment.provider_payment_charge_id,
        )
        await self._fulfil_once(paid, record, message)

    async def _fulfil_once(self, paid: Paid, record: InvoiceRecord, message: Message) -> None:
        if self._fulfil is None:
            raise RuntimeError("PaymentDesk.bind(nodes, ...) was not called")
        try:
            await self._fulfil(paid)
        except PaymentRefused as exc:
            logger.warning("Paid order %s refused: %s; refunding", paid.idempotency_key, exc)
            await self._refund(message, f"the food service refused the order: {exc}")
            return
        except Exception:
            # Maybe ordered, maybe not: no automatic refund; the staff check, the user is told.
            logger.exception("Paid order %s not confirmed", paid.idempotency_key)
            await self._done(paid.user_id, paid.telegram_payment_charge_id, "unconfirmed")
            await self._tell(paid.user_id, self.texts.payment_unconfirmed())
            await self._staff(
                self.texts.staff_refund(
                    user=_who(message),
                    total=format_amount(paid.total_amount, paid.currency),
                    charge=paid.telegram_payment_charge_id,
                    reason="order not confirmed by the food service: check it",
                )
            )
            return
        await self._done(paid.user_id, paid.telegram_payment_charge_id, "ordered")
        await self._tell(paid.user_id, self.texts.payment_ordered())
        await self._staff(
            self.texts.staff_paid(
                user=_who(message),
                total=format_amount(paid.total_amount, paid.currency),
                items=", ".join(paid.items),
                charge=paid.telegram_payment_charge_id,
            )
        )
        await self._leave_checkout(paid.user_id, record.visit, paid.telegram_payment_charge_id)

    async def _leave_checkout(self, user_id: int, visit: int, charge: str) -> None:
        """A user still waiting on the paid invoice moves on (`then`), once per charge."""
        if self._nodes is None or self._then is None:
            return
        current = await self._nodes.user(user_id).get_node()
        if current is not None and current.visit == visit:
            await self._nodes.user(user_id).to(self._then(), event_id=f"paid:{charge}")

    async def _refund(self, message: Message, reason: str) -> None:
        payment = message.successful_payment
        if payment is None or message.from_user is None:
            return
        user_id = message.from_user.id
        charge = payment.telegram_payment_charge_id
        total = format_amount(payment.total_amount, payment.currency)
        if payment.currency == STARS:
            try:
                await self.bot.refund_star_payment(user_id, charge)
            except TelegramBadRequest as exc:
                if "CHARGE_ALREADY_REFUNDED" not in str(exc):
                    logger.error("Refund of %s failed: %s", charge, exc)
                    await self._staff_refund(
                        message, payment.total_amount, payment.currency, reason
                    )
                    await self._done(user_id, charge, "refund-failed")
                    return
            await self._done(user_id, charge, "refunded")
            await self._tell(user_id, self.texts.payment_refunded(total=total))
            return
        await self._done(user_id, charge, "refund-pending")
        await self._staff_refund(message, payment.total_amount, payment.currency, reason)
        await self._tell(user_id, self.texts.payment_refund_pending(total=total))

    async def _staff_refund(
        self, message: Message, amount: int, currency: str, reason: str
    ) -> None:
        payment = message.successful_payment
        await self._staff(
            self.texts.staff_refund(
                user=_who(message),
                total=format_amount(amount, currency),
                charge=payment.telegram_payment_charge_id if payment else "-",
                reason=reason,
            )
        )

    async def _done(self, user_id: int, charge: str, state: str) -> None:
        redis = self._redis_client()
        await redis.set(self._charge_key(user_id, charge), state, px=RECORD_TTL * 1000)

    async def _tell(self, user_id: int, text: Text) -> None:
        language = await self.languages.of(user_id)
        try:
            await self.bot.send_message(user_id, self.languages.render(language, text))
        except TelegramAPIError as exc:
            logger.warning("Payment news for user %s not sent: %s", user_id, exc)

    async def _first_delivery(self, message: Message) -> bool:
        """False for a re-delivered command (`Nodes.mark_handled`, handled.py)."""
        if self._nodes is None:
            raise RuntimeError("PaymentDesk.bind(nodes, ...) was not called")
        return await self._nodes.mark_handled(message.chat.id, event_id(message))

    async def _staff(self, text: Text) -> None:
        chat = self.settings.staff_chat_id
        if chat is None:
            return
        try:
            await self.bot.send_message(chat, self.languages.render(self.languages.default, text))
        except TelegramAPIError as exc:
            logger.error("Staff chat %s not told: %s | %s", chat, exc, text.id)

    def _router(self) -> Router:
        router = Router(name=f"{__name__}.payments")

        @router.pre_checkout_query()
        async def pre_checkout(query: PreCheckoutQuery) -> None:
            await self.pre_checkout(query)

        @router.message(F.successful_payment)
        async def successful_payment(message: Message) -> None:
            await self.successful_payment(message)

        # They store no step: marked handled first, so a re-delivery is not answered again.
        @router.message(Command("paysupport"))
        async def paysupport(message: Message) -> None:
            if await self._first_delivery(message):
                await self._tell(message.chat.id, self.texts.payment_support())

        @router.message(Command("terms"))
        async def terms(message: Message) -> None:
            if await self._first_delivery(message):
                await self._tell(message.chat.id, self.texts.payment_terms())

        return router


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _parse_payload(payload: str) -> tuple[int, str]:
    user, _, nonce = payload.partition(".")
    if not user.isdigit() or not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", nonce):
        return 0, ""
    return int(user), nonce


def _record(raw: Any) -> InvoiceRecord | None:
    if not raw:
        return None
    try:
        return InvoiceRecord.model_validate_json(raw)
    except ValidationError:
        return None


def _visit(raw_state: Any) -> int | None:
    """The visit number in a stored node (None: no node, or unreadable)."""
    if not raw_state:
        return None
    try:
        value = json.loads(raw_state)
    except ValueError:
        return None
    visit = value.get(VISIT_FIELD, 0) if isinstance(value, dict) else None
    return visit if isinstance(visit, int) else None


def _who(message: Message) -> str:
    user = message.from_user
    if user is None:
        return str(message.chat.id)
    name = f"@{user.username}" if user.username else user.full_name
    return f"{name} ({user.id})"
