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

The invoice itself (settings, records, the rules Telegram checks) is invoices.py; the records in
Redis and their scripts are payment_ledger.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiogram import F, Router
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters import Command
from aiogram.types import LabeledPrice, Message, PreCheckoutQuery
from redis.exceptions import RedisError

from .events import event_id
from .i18n import Text
from .invoices import (
    MAX_DESCRIPTION,
    MAX_TITLE,
    STARS,
    Fulfil,
    InvoiceRecord,
    Paid,
    PaymentRefused,
    PaymentSettings,
    PaymentTexts,
    check_invoice,
    format_amount,
    parse_payload,
)
from .language import Languages
from .payment_ledger import PaymentLedger

if TYPE_CHECKING:
    from aiogram import Bot

    from botnodes import Node, Nodes

logger = logging.getLogger(__name__)

#: Telegram cancels a payment whose pre-checkout query is not answered within 10 s.
PRE_CHECKOUT_DEADLINE = 10.0
#: Waits between tries to claim a paid charge while Redis is away (about a minute in all).
CLAIM_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


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
        self._ledger = PaymentLedger(key_prefix)
        #: Seconds pre-checkout may spend deciding; the rest of Telegram's 10 s is for answering.
        self.decide_within = decide_within
        #: A charge claimed by a process that died is handled again after this long.
        self.claim_ttl = claim_ttl
        self._fulfil: Fulfil | None = None
        self._then: Callable[[], Node[Any, Any, Any, Any]] | None = None
        self._nodes: Nodes[Any, Any, Any] | None = None

    @property
    def currency(self) -> str:
        return self.settings.currency

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
        self._ledger.bind(nodes.run_script, nodes.redis)
        self._fulfil = fulfil
        self._then = then
        return self._router()

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
        await self._ledger.store(user_id, nonce, record)
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
        user_id, nonce = parse_payload(query.invoice_payload)
        if user_id != query.from_user.id or not nonce:
            return self.texts.payment_mismatch()
        record, paid, visit = await self._ledger.read(user_id, nonce)
        if record is None:
            return self.texts.payment_mismatch()
        if query.currency != record.currency or query.total_amount != record.total_amount:
            return self.texts.payment_mismatch()
        if paid:
            return self.texts.payment_already_paid()
        if visit != record.visit:
            return self.texts.payment_stale()
        return None

    # The payment: exactly one order (or one refund) per charge.
    async def successful_payment(self, message: Message) -> None:
        payment = message.successful_payment
        if payment is None or message.from_user is None:
            return
        user_id, nonce = parse_payload(payment.invoice_payload)
        charge = payment.telegram_payment_charge_id
        if user_id != message.from_user.id:
            user_id = message.from_user.id
        # Money has moved: a Redis that is away for a moment is waited for, not given up on
        # (a polling bot is not sent this update again once its handler returned).
        for delay in (*CLAIM_RETRIES, None):
            try:
                verdict, record = await self._ledger.claim(user_id, nonce, charge, self.claim_ttl)
                break
            except (RedisError, OSError) as exc:
                if delay is None:
                    logger.critical("Payment %s of user %s not handled: %r", charge, user_id, exc)
                    raise
                logger.warning("Payment %s: Redis away (%r); again in %s s", charge, exc, delay)
                await asyncio.sleep(delay)
        if verdict not in {"first", "second"}:
            logger.info("Payment %s of user %s not handled again: %s", charge, user_id, verdict)
            if verdict == "unknown":
                await self._staff_refund(
                    message, payment.total_amount, payment.currency, "unknown invoice"
                )
            return
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
        await self._ledger.done(user_id, charge, state)

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


def _who(message: Message) -> str:
    user = message.from_user
    if user is None:
        return str(message.chat.id)
    name = f"@{user.username}" if user.username else user.full_name
    return f"{name} ({user.id})"
