"""A stand-in for the Telegram Bot API that keeps Telegram's rules, in process or over HTTP.

`FakeTelegram` answers the Bot API methods this bot uses with valid objects, records every call
and refuses what Telegram refuses: a message longer than 4,096 characters or empty, callback
data over 64 bytes, a callback query answered twice or with more than 200 characters, editing
a message that does not exist or not changing it. `fail()` makes chosen calls answer 429 with
`retry_after`, a 5xx, or drop the connection, the way Telegram does now and then.
`enforce_rates()` makes it answer 429 the way Telegram's flood control does when a bot sends
faster than its global or per-chat rate (off unless asked for).

It also takes payments as Telegram does: `sendInvoice` is checked against Telegram's rules
(title 1-32 characters, description 1-255, payload 1-128 bytes, positive whole amounts, exactly
one price and no provider token for Stars, a provider token otherwise), `pay_updates` makes the
`pre_checkout_query` and `successful_payment` updates a paying user causes,
`answerPreCheckoutQuery` is taken once per query, and `refundStarPayment` refunds a charge once
(a second refund answers CHARGE_ALREADY_REFUNDED).

`FakeSession` plugs it into an aiogram `Bot` (no network, for `Dispatcher.feed_update`);
`FakeBotAPIServer` serves it on 127.0.0.1 for a bot process started with TELEGRAM_API_URL,
including the long-polling `getUpdates` that `push_message` and `push_press` feed.

It is one file, longer than this project's other modules, on purpose: it imports nothing of
botnodes, so the template's benchmark and compose tests load it by its path into processes
that have no bake installed (or an older bake, for `--baseline`).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import json
import math
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiohttp import web

BOT_USER = {"id": 4242, "is_bot": True, "first_name": "Food test bot", "username": "food_test_bot"}

#: Telegram's limits that the bot touches.
MAX_MESSAGE_LENGTH = 4096
MAX_CALLBACK_DATA_BYTES = 64
MAX_CALLBACK_ANSWER_LENGTH = 200
MAX_INVOICE_TITLE = 32
MAX_INVOICE_DESCRIPTION = 255
MAX_INVOICE_PAYLOAD_BYTES = 128
STARS = "XTR"

Params = dict[str, Any]


@dataclass(frozen=True)
class ApiCall:
    """One Bot API call; `error` is None if Telegram would have carried it out."""

    method: str
    params: Params
    error: str | None = None
    #: When the stand-in took the call (time.monotonic()), e.g. to count sends in a window.
    at: float = field(default_factory=time.monotonic, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None


class UnknownMethodError(Exception):
    """The bot called a Bot API method the fake does not implement."""


class Refusal(Exception):
    """Telegram answered `{"ok": false, ...}`: the error code, description and parameters."""

    def __init__(
        self,
        status: int,
        description: str,
        retry_after: int | None = None,
        raw: str | None = None,
    ) -> None:
        super().__init__(f"{status} {description}")
        self.status = status
        self.description = description
        self.retry_after = retry_after
        #: A body that is not Telegram's JSON (a proxy's error page), sent as it is.
        self.raw = raw

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


class Dropped(Exception):
    """The connection was dropped before Telegram answered."""


class Stalled(Exception):
    """The call is never answered."""


@dataclass
class _Failure:
    method: str
    status: int | None
    retry_after: int | None
    drop: bool
    times: int
    match: Callable[[Params], bool] | None
    stall: bool = False
    delivered: bool = False
    body: str | None = None

    def applies(self, method: str, params: Params) -> bool:
        return (
            self.times > 0 and method == self.method and (self.match is None or self.match(params))
        )

    def trigger(self) -> None:
        self.times -= 1
        if self.stall:
            raise Stalled(self.method)
        if self.drop:
            raise Dropped(self.method)
        status = self.status or 500
        if status == 429:
            retry_after = self.retry_after if self.retry_after is not None else 1
            raise Refusal(429, f"Too Many Requests: retry after {retry_after}", retry_after)
        descriptions = {
            400: "Bad Request: chat not found",
            403: "Forbidden: bot was blocked by the user",
            500: "Internal Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
        }
        raise Refusal(status, descriptions.get(status, "Server Error"), raw=self.body)


#: The methods that put a message in a chat: what Telegram's rates count.
RATED_METHODS = frozenset(
    {"sendMessage", "sendPhoto", "sendDocument", "sendMediaGroup", "copyMessage", "forwardMessage"}
)


@dataclass
class TelegramRates:
    """Telegram's flood control as the stand-in applies it once `enforce_rates()` is called.

    Telegram publishes no exact rule, only "about 30 messages per second" overall and "about
    one per second in a chat, short bursts tolerated; 20 per minute in a group". Here: at
    most `per_second` messages in any one-second window, and per chat a bucket of
    `chat_burst` messages refilled at `chat_per_second` (`group_per_minute` for groups).
    """

    per_second: int = 30
    chat_per_second: float = 1.0
    group_per_minute: float = 20.0
    chat_burst: int = 4
    #: Messages refused with 429 by these rates (not counting failures set with `fail()`).
    refused: int = 0
    _window: collections.deque[float] = field(default_factory=collections.deque)
    _buckets: dict[int, tuple[float, float]] = field(default_factory=dict)

    def take(self, chat_id: int, now: float) -> None:
        """Count one message to `chat_id`, or raise the 429 Telegram would answer."""
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        rate = self.group_per_minute / 60 if chat_id < 0 else self.chat_per_second
        tokens, then = self._buckets.get(chat_id, (float(self.chat_burst), now))
        tokens = min(float(self.chat_burst), tokens + (now - then) * rate)
        if len(self._window) >= self.per_second:
            self._refuse(self._window[0] + 1.0 - now)
        if tokens < 1:
            self._refuse((1 - tokens) / rate)
        self._window.append(now)
        self._buckets[chat_id] = (tokens - 1, now)

    def _refuse(self, wait: float) -> None:
        self.refused += 1
        retry_after = max(1, math.ceil(wait))
        raise Refusal(429, f"Too Many Requests: retry after {retry_after}", retry_after)


def unique_ids() -> itertools.count[int]:
    """Ids that no earlier stand-in handed out, like Telegram's: from the clock, counting up.

    botnodes remembers the ids of handled updates (a re-delivery runs once), so a test that
    starts a second client or bot process against the same Redis must not reuse them.
    """
    return itertools.count(time.time_ns() // 1000)


@dataclass
class FakeTelegram:
    """The Bot API methods the bot uses, answered with valid objects and recorded."""

    calls: list[ApiCall] = field(default_factory=list)
    #: Every delivered message by id, as Telegram returned it (with its reply_markup).
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Callback query ids handed out by `press_update`, and how often each was answered.
    answers: dict[str, list[Params]] = field(default_factory=dict)
    #: Delivered texts per chat, kept as they arrive so a long run can look one chat up fast.
    texts: dict[int, list[str]] = field(default_factory=dict)
    #: Telegram's flood control, once `enforce_rates()` turned it on.
    rates: TelegramRates | None = None
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
    _failures: list[_Failure] = field(default_factory=list)
    _message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _query_ids: itertools.count[int] = field(default_factory=unique_ids)

    def fail(
        self,
        method: str,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        drop: bool = False,
        stall: bool = False,
        times: int = 1,
        match: Callable[[Params], bool] | None = None,
        delivered: bool = False,
        body: str | None = None,
    ) -> None:
        """Make the next `times` calls of `method` (whose params satisfy `match`) fail.

        `status=429` answers "Too Many Requests: retry after N" with `retry_after`; another
        status (default 500) answers that server error; `drop=True` drops the connection;
        `stall=True` never answers (in process only: the HTTP server answers everything).
        `delivered=True` carries the call out first and then fails its answer (a connection
        reset or a proxy's 502 after Telegram delivered); `body` answers that text instead of
        Telegram's JSON (e.g. an HTML error page).
        """
        self._failures.append(
            _Failure(method, status, retry_after, drop, times, match, stall, delivered, body)
        )

    def enforce_rates(self, rates: TelegramRates | None = None) -> TelegramRates:
        """Answer 429 when messages come faster than `rates` (Telegram's, by default)."""
        self.rates = rates or TelegramRates()
        return self.rates

    def answer(self, method: str, params: Mapping[str, Any]) -> Any:
        """Carry out a call as Telegram would; raise Refusal or Dropped when it would not."""
        params = dict(params)
        failure = next((f for f in self._failures if f.applies(method, params)), None)
        try:
            if failure is not None and not failure.delivered:
                failure.trigger()
            if self.rates is not None and method in RATED_METHODS:
                self.rates.take(int(params["chat_id"]), time.monotonic())
            result = self._carry_out(method, params)
        except (Refusal, Dropped, Stalled) as error:
            self.calls.append(ApiCall(method, params, error=str(error) or type(error).__name__))
            raise
        self.calls.append(ApiCall(method, params))
        if failure is not None and failure.delivered:
            failure.trigger()  # carried out (above), and then the answer is lost or garbled
        return result

    def _carry_out(self, method: str, params: Params) -> Any:
        if method == "getMe":
            return BOT_USER
        if method == "sendMessage":
            return self._send_message(params)
        if method == "answerCallbackQuery":
            return self._answer_callback_query(params)
        if method in {"editMessageText", "editMessageReplyMarkup"}:
            return self._edit_message(method, params)
        if method == "sendInvoice":
            return self._send_invoice(params)
        if method == "answerPreCheckoutQuery":
            return self._answer_pre_checkout(params)
        if method == "refundStarPayment":
            return self._refund_star_payment(params)
        if method in {"deleteWebhook", "setWebhook", "close", "logOut"}:
            return True
        raise UnknownMethodError(method)

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
        sender = _user(user_id, **_user_args(user_fields))
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

    def delivered(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """Every message Telegram took (as it is now), optionally only those to `chat_id`."""
        return [
            message
            for message in self.messages.values()
            if chat_id is None or message["chat"]["id"] == chat_id
        ]

    def sent_texts(self, chat_id: int | None = None) -> list[str]:
        """Texts of every delivered sendMessage so far, optionally only those to `chat_id`."""
        if chat_id is not None:
            return list(self.texts.get(chat_id, []))
        return [
            str(call.params["text"])
            for call in self.calls
            if call.ok and call.method == "sendMessage"
        ]

    def forget(self) -> None:
        """Drop everything recorded so far (long runs: the record must not grow forever)."""
        self.calls.clear()
        self.messages.clear()
        self.answers.clear()
        self.texts.clear()

    def attempts(self, method: str) -> list[ApiCall]:
        """Every call of `method`, delivered or refused."""
        return [call for call in self.calls if call.method == method]

    def unanswered_presses(self) -> list[str]:
        """Callback query ids handed out by `press_update` that were never answered."""
        return [query_id for query_id, answers in self.answers.items() if not answers]

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


def _user(
    user_id: int,
    username: str | None,
    first_name: str,
    last_name: str | None,
    language_code: str | None = None,
) -> Params:
    user: Params = {"id": user_id, "is_bot": False, "first_name": first_name}
    if username is not None:
        user["username"] = username
    if last_name is not None:
        user["last_name"] = last_name
    if language_code is not None:  # Telegram leaves it out when it doesn't know
        user["language_code"] = language_code
    return user


def _user_args(fields: Mapping[str, Any]) -> dict[str, Any]:
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
        "from": _user(user_id, username, first_name, last_name, language_code),
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
            "from": _user(user_id, username, first_name, last_name, language_code),
            "chat_instance": str(user_id),
            "message": dict(message),
            "data": data,
        },
    }


@functools.cache
def _response_type(returning: Any) -> Any:
    """`Response[returning]`, built once per type: pydantic builds a new class on each use."""
    return Response[returning]


class FakeSession(BaseSession):
    """An aiogram session that answers from `FakeTelegram` instead of the network."""

    def __init__(self, telegram: FakeTelegram | None = None) -> None:
        super().__init__()
        self.telegram = telegram or FakeTelegram()

    async def make_request(
        self, bot: Bot, method: TelegramMethod[TelegramType], timeout: int | None = None
    ) -> TelegramType:
        # The parameters as aiogram's HTTP session prepares them (defaults applied), kept as
        # Python values instead of JSON strings: the rules are the same, the benchmark that
        # reuses this session pays no JSON round trip per reply.
        files: dict[str, Any] = {}
        params = {
            key: prepared
            for key, value in method.model_dump(warnings=False, exclude_none=True).items()
            if (prepared := self.prepare_value(value, bot=bot, files=files, _dumps_json=False))
            is not None
        }
        try:
            result = self.telegram.answer(method.__api_method__, params)
        except Dropped:
            raise TelegramNetworkError(method, "Server disconnected") from None
        except Stalled:
            await asyncio.Event().wait()  # a Bot API that never answers: only a timeout ends it
        except Refusal as refusal:
            # aiogram turns the error body into TelegramBadRequest, TelegramRetryAfter, ...
            # (a body that is not JSON into ClientDecodeError, as from the network)
            raw = refusal.raw if refusal.raw is not None else json.dumps(refusal.body())
            self.check_response(bot, method, refusal.status, raw)
            raise AssertionError("check_response accepted an error") from None
        # Validated by aiogram's own response model, as an HTTP answer would be.
        response = _response_type(method.__returning__).model_validate(
            {"ok": True, "result": result}, context={"bot": bot}
        )
        return response.result  # type: ignore[no-any-return]

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        raise UnknownMethodError(f"no file at {url}")
        yield b""  # type: ignore[unreachable]  # an async generator, like the base class

    async def close(self) -> None:
        """Nothing to close: no network."""


class FakeBotAPIServer:
    """The fake Bot API over HTTP on 127.0.0.1, for a bot started with TELEGRAM_API_URL."""

    def __init__(self, token: str, host: str = "127.0.0.1") -> None:
        self.token = token
        self.host = host
        self.telegram = FakeTelegram()
        self._updates: list[dict[str, Any]] = []
        self._update_ids = unique_ids()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.port = 0
        #: Most updates one getUpdates call returns (Telegram's `limit`); lower it to make
        #: several polling processes share a burst.
        self.batch_size = 100

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/bot{token}/{method}", self._handle)
        app.router.add_route("GET", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        # Wake long-polling getUpdates calls so shutdown does not wait out their timeout.
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    def next_update_id(self) -> int:
        return next(self._update_ids)

    async def push_update(self, update: dict[str, Any]) -> int:
        """Queue an update for the next getUpdates; returns its update_id."""
        async with self._changed:
            self._updates.append(update)
            self._changed.notify_all()
        return int(update["update_id"])

    async def push_message(self, user_id: int, text: str | None, **fields: Any) -> int:
        """Queue a message from `user_id` for the next getUpdates; returns its update_id."""
        return await self.push_update(
            message_update(self.next_update_id(), user_id, text, **fields)
        )

    async def push_press(self, user_id: int, button: str, **fields: Any) -> int:
        """Queue a press of the button `button` on the newest message to `user_id` showing it."""
        update = self.telegram.press_update(self.next_update_id(), user_id, button, **fields)
        return await self.push_update(update)

    def sent_texts(self, chat_id: int | None = None) -> list[str]:
        return self.telegram.sent_texts(chat_id)

    def calls(self, method: str) -> list[ApiCall]:
        return self.telegram.attempts(method)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until `predicate()` holds; fail the test with `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    continue

    async def wait_polling(self, timeout: float = 20.0, *, since: int = 0) -> None:
        """Wait until a bot asks for updates, i.e. it started and is ready.

        `since`: how many getUpdates calls there were before it started (earlier bots').
        """
        await self.wait_for(lambda: len(self.calls("getUpdates")) > since, timeout, "getUpdates")

    async def say(
        self, user_id: int, text: str | None, expect: int, timeout: float = 15.0, **fields: Any
    ) -> list[str]:
        """Send a message and return the next `expect` texts the bot sends to this user."""
        before = len(self.sent_texts(user_id))
        await self.push_message(user_id, text, **fields)
        return await self._replies(user_id, before, expect, timeout, repr(text))

    async def press(
        self, user_id: int, button: str, expect: int, timeout: float = 15.0, **fields: Any
    ) -> list[str]:
        """Press a button and return the next `expect` texts the bot sends to this user."""
        before = len(self.sent_texts(user_id))
        await self.push_press(user_id, button, **fields)
        return await self._replies(user_id, before, expect, timeout, f"the {button!r} button")

    async def _replies(
        self, user_id: int, before: int, expect: int, timeout: float, what: str
    ) -> list[str]:
        await self.wait_for(
            lambda: len(self.sent_texts(user_id)) >= before + expect,
            timeout,
            f"{expect} answer(s) to {what}",
        )
        return self.sent_texts(user_id)[before:]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        params = await self._params(request)
        if method == "getUpdates":
            async with self._changed:
                self.telegram.calls.append(ApiCall(method, params))
                self._changed.notify_all()
            updates = await self._get_updates(params, request)
            return web.json_response({"ok": True, "result": updates})
        async with self._changed:
            try:
                result = self.telegram.answer(method, params)
            except UnknownMethodError:
                return web.json_response(
                    {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
                )
            except Refusal as refusal:
                self._changed.notify_all()
                if refusal.raw is not None:
                    return web.Response(status=refusal.status, text=refusal.raw)
                return web.json_response(refusal.body(), status=refusal.status)
            except Dropped:
                self._changed.notify_all()
                if request.transport is not None:
                    request.transport.abort()  # the client sees the connection reset
                return web.Response(status=500)
            self._changed.notify_all()
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    async def _params(request: web.Request) -> Params:
        if request.content_type == "application/json":
            body = await request.json()
            return dict(body)
        form = await request.post()
        return {key: str(value) for key, value in form.items()}

    async def _get_updates(
        self, params: Mapping[str, Any], request: web.Request
    ) -> list[dict[str, Any]]:
        offset = int(params.get("offset", 0))
        timeout = float(params.get("timeout", 0))
        deadline = time.monotonic() + timeout
        async with self._changed:
            # Updates below the offset are confirmed: Telegram never sends them again.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self._closing and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())
                except TimeoutError:
                    break
            if request.transport is None or request.transport.is_closing():
                return []  # the poller is gone (killed): like Telegram, keep its updates
            batch = self._updates[: min(int(params.get("limit", 100)), self.batch_size)]
            # Hand each update to one poller only, so several bot processes can share a server.
            self._updates = self._updates[len(batch) :]
            return batch
