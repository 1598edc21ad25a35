"""`FakeTelegram`: one Bot API call answered, with the failures and rates the test asked for.

The handlers are its bases (chats.py, invoices.py); here a call first meets the injected
failures (faults.py) and the flood control, then the handler of its method, and is recorded
either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .calls import BOT_USER, ApiCall, Dropped, Params, Refusal, Stalled, UnknownMethodError
from .chats import Chats
from .faults import RATED_METHODS, Failure, Latency, TelegramRates
from .invoices import Invoices


@dataclass
class FakeTelegram(Invoices, Chats):
    """The Bot API methods the bot uses, answered with valid objects and recorded."""

    #: Telegram's flood control, once `enforce_rates()` turned it on.
    rates: TelegramRates | None = None
    #: The network's delay each way of a call, with jitter (none unless set): the session
    #: and the HTTP server wait it out around `answer`.
    latency: Latency | None = None
    _failures: list[Failure] = field(default_factory=list)

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
            Failure(method, status, retry_after, drop, times, match, stall, delivered, body)
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
