"""Telegram Payments as the stand-in takes them: invoices checked, a user's payment, refunds.

`sendInvoice` is checked against Telegram's rules (title 1-32 characters, description 1-255,
payload 1-128 bytes, positive whole amounts, exactly one price and no provider token for Stars,
a provider token otherwise); `pay_updates` makes the `pre_checkout_query` and
`successful_payment` updates a paying user causes; `answerPreCheckoutQuery` is taken once per
query; `refundStarPayment` refunds a charge once (a second answers CHARGE_ALREADY_REFUNDED).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from .calls import BOT_USER, Params, Refusal
from .record import Record
from .updates import user_args, user_json

#: Telegram's limits on an invoice, and the currency of Telegram Stars.
MAX_INVOICE_TITLE = 32
MAX_INVOICE_DESCRIPTION = 255
MAX_INVOICE_PAYLOAD_BYTES = 128
STARS = "XTR"


@dataclass
class Invoices(Record):
    """sendInvoice, answerPreCheckoutQuery, refundStarPayment, and the payments users make."""

    #: Each invoice sent, by the id of its message: the sendInvoice parameters (payload too).
    invoices: dict[int, Params] = field(default_factory=dict)
    #: Each pre-checkout query handed out by `pay_updates`, with its answers (one, if right).
    pre_checkout_answers: dict[str, list[Params]] = field(default_factory=dict)
    #: When each pre-checkout query was handed out and answered (time.monotonic()).
    pre_checkout_times: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    #: Each charge made by a payment: user id, currency and amount.
    charges: dict[str, Params] = field(default_factory=dict)
    #: Charges refunded through refundStarPayment, in order.
    refunds: list[str] = field(default_factory=list)

    def _send_invoice(self, params: Params) -> dict[str, Any]:
        title, description = str(params.get("title", "")), str(params.get("description", ""))
        payload, currency = str(params.get("payload", "")), str(params.get("currency", ""))
        prices = params.get("prices")
        prices = json.loads(prices) if isinstance(prices, str) else list(prices or [])
        token = str(params.get("provider_token") or "")
        if not 1 <= len(title) <= MAX_INVOICE_TITLE:
            raise Refusal(400, "Bad Request: INVOICE_TITLE_INVALID")
        if not 1 <= len(description) <= MAX_INVOICE_DESCRIPTION:
            raise Refusal(400, "Bad Request: INVOICE_DESCRIPTION_INVALID")
        if not 1 <= len(payload.encode()) <= MAX_INVOICE_PAYLOAD_BYTES:
            raise Refusal(400, "Bad Request: INVOICE_PAYLOAD_INVALID")
        if len(currency) != 3 or not currency.isupper():
            raise Refusal(400, "Bad Request: CURRENCY_INVALID")
        amounts = [price.get("amount") for price in prices]
        if not amounts or any(type(amount) is not int or amount <= 0 for amount in amounts):
            raise Refusal(400, "Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID")
        if currency == STARS and (len(amounts) != 1 or token):
            raise Refusal(400, "Bad Request: STARS_INVOICE_INVALID")
        if currency != STARS and not token:
            raise Refusal(400, "Bad Request: PAYMENT_PROVIDER_INVALID")
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": int(params["chat_id"]), "type": "private"},
            "from": BOT_USER,
            "invoice": {
                "title": title,
                "description": description,
                "start_parameter": "",
                "currency": currency,
                "total_amount": sum(amounts),
            },
        }
        self.messages[message["message_id"]] = message
        self.invoices[message["message_id"]] = {**params, "prices": prices}
        return message

    def _answer_pre_checkout(self, params: Params) -> bool:
        query_id = str(params.get("pre_checkout_query_id"))
        if query_id not in self.pre_checkout_answers or self.pre_checkout_answers[query_id]:
            raise Refusal(400, "Bad Request: QUERY_ID_INVALID")
        ok = params.get("ok") in {True, "true", "True"}
        if not ok and not str(params.get("error_message") or "").strip():
            raise Refusal(400, "Bad Request: ERROR_MESSAGE_EMPTY")
        self.pre_checkout_answers[query_id].append({**params, "ok": ok})
        asked, _ = self.pre_checkout_times[query_id]
        self.pre_checkout_times[query_id] = (asked, time.monotonic())
        return True

    def _refund_star_payment(self, params: Params) -> bool:
        charge_id = str(params.get("telegram_payment_charge_id"))
        charge = self.charges.get(charge_id)
        if charge is None or charge["user_id"] != int(params.get("user_id", 0)):
            raise Refusal(400, "Bad Request: CHARGE_ID_INVALID")
        if charge["currency"] != STARS:
            raise Refusal(400, "Bad Request: CHARGE_NOT_STARS")
        if charge_id in self.refunds:
            raise Refusal(400, "Bad Request: CHARGE_ALREADY_REFUNDED")
        self.refunds.append(charge_id)
        return True

    def last_invoice(self, chat_id: int) -> tuple[int, Params]:
        """The newest invoice sent to `chat_id`: its message id and sendInvoice parameters."""
        for message_id in reversed(list(self.invoices)):
            if int(self.invoices[message_id]["chat_id"]) == chat_id:
                return message_id, self.invoices[message_id]
        raise LookupError(f"no invoice was sent to {chat_id}")

    def pay_updates(
        self,
        update_ids: tuple[int, int],
        user_id: int,
        invoice: Params,
        *,
        currency: str | None = None,
        total_amount: int | None = None,
        payload: str | None = None,
        **user_fields: Any,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The `pre_checkout_query` update a user paying `invoice` causes, and the
        `successful_payment` update Telegram sends if it was answered ok (with a new charge).

        `currency`, `total_amount` and `payload` change what the query claims (a forgery)."""
        currency = currency or str(invoice["currency"])
        amount = (
            sum(p["amount"] for p in invoice["prices"]) if total_amount is None else total_amount
        )
        payload = str(invoice["payload"]) if payload is None else payload
        query_id = f"p{next(self._query_ids)}"
        self.pre_checkout_answers[query_id] = []
        self.pre_checkout_times[query_id] = (time.monotonic(), None)
        sender = user_json(user_id, **user_args(user_fields))
        query = {
            "update_id": update_ids[0],
            "pre_checkout_query": {
                "id": query_id,
                "from": sender,
                "currency": currency,
                "total_amount": amount,
                "invoice_payload": payload,
            },
        }
        charge_id = f"tg-charge-{next(self._query_ids)}"
        self.charges[charge_id] = {"user_id": user_id, "currency": currency, "amount": amount}
        paid = {
            "update_id": update_ids[1],
            "message": {
                "message_id": update_ids[1],
                "date": int(time.time()),
                "chat": {"id": user_id, "type": "private"},
                "from": sender,
                "successful_payment": {
                    "currency": currency,
                    "total_amount": amount,
                    "invoice_payload": payload,
                    "telegram_payment_charge_id": charge_id,
                    "provider_payment_charge_id": "" if currency == STARS else f"pr-{charge_id}",
                },
            },
        }
        return query, paid
