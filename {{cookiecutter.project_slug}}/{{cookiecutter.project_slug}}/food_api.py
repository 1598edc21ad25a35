"""The food API a finished order is sent to, and (with payments on) asked for its price.

Nodes depend on the `FoodAPI` protocol only, so tests and other deployments can plug in
their own implementation; `create_food_api` picks one from the settings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import aiohttp

from .settings import FoodApiSettings

logger = logging.getLogger(__name__)


class FoodOrderError(Exception):
    """The order was not accepted; the message says why and is safe to log."""


class FoodOrderRefused(FoodOrderError):
    """The service answered no (a 4xx): final, sending it again won't change it."""


#: One line of a quote: its label and amount in the smallest units of the currency.
QuoteLine = tuple[str, int]

#: What each item costs when no FOOD_API_QUOTE_URL is set (smallest units: 1.00, or 100 Stars).
STAND_IN_PRICE = 100


class FoodAPI(Protocol):
    """Places orders. Implementations raise `FoodOrderError` for every failure."""

    async def order_food(
        self,
        user_id: int,
        items: Sequence[str],
        *,
        idempotency_key: str,
        payment: Mapping[str, Any] | None = None,
    ) -> None:
        """Place an order of `items` for the Telegram user `user_id`.

        The same `idempotency_key` means the same order: a service that honours it places
        it once however often it is sent (after a crash, or a retried step). `payment` is
        the payment it was paid with, if any (docs/payments.md).
        """

    async def quote(self, user_id: int, items: Sequence[str]) -> list[QuoteLine]:
        """The price of `items`, line by line; `FoodOrderRefused` if the service won't sell."""

    async def close(self) -> None:
        """Release network resources; called once at shutdown."""


class HttpFoodAPI:
    """POSTs `{"user_id": ..., "items": [...]}` as JSON; any 2xx answer is success.

    The key goes in the `Idempotency-Key` header (the IETF draft Stripe and others follow),
    so a service that honours it takes a repeated order once. That is what makes it safe to
    send an order again when the service did not answer (a timeout, a 5xx, a dropped
    connection, 408 or 429): it is, for `retry_for` seconds. Any other answer is the
    service's decision and is final.
    """

    def __init__(
        self, url: str, timeout: float, retry_for: float = 0.0, quote_url: str | None = None
    ) -> None:
        self._url = url
        self._quote_url = quote_url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry_for = retry_for
        # Created on first use: an aiohttp session must be made inside the running loop.
        self._session: aiohttp.ClientSession | None = None

    async def order_food(
        self,
        user_id: int,
        items: Sequence[str],
        *,
        idempotency_key: str,
        payment: Mapping[str, Any] | None = None,
    ) -> None:
        payload: dict[str, Any] = {"user_id": user_id, "items": list(items)}
        if payment is not None:
            payload["payment"] = dict(payment)
        await self._retried(self._url, payload, {"Idempotency-Key": idempotency_key})

    async def quote(self, user_id: int, items: Sequence[str]) -> list[QuoteLine]:
        """POSTs `{"user_id", "items"}` to FOOD_API_QUOTE_URL; retried like an order."""
        if self._quote_url is None:
            return [(item, STAND_IN_PRICE) for item in items]
        body = await self._retried(self._quote_url, {"user_id": user_id, "items": list(items)}, {})
        return quote_lines(body)

    async def _retried(self, url: str, payload: Any, headers: Mapping[str, str]) -> Any:
        give_up = time.monotonic() + self._retry_for
        attempt = 0
        while True:
            try:
                return await self._post(url, payload, headers)
            except _NotAnswered as exc:
                attempt += 1
                delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)
                if time.monotonic() + delay > give_up:
                    raise FoodOrderError(f"{exc} (tried {attempt} time(s))") from None
                logger.warning(
                    "Food API call %s not answered (%s); sending it again in %.1f s",
                    headers.get("Idempotency-Key", url),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _post(self, url: str, payload: Any, headers: Mapping[str, str]) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(url, json=payload, headers=dict(headers)) as response:
                if response.status >= 500 or response.status in _TRY_AGAIN:
                    raise _NotAnswered(f"food API answered HTTP {response.status}")
                if not 200 <= response.status < 300:
                    raise FoodOrderRefused(f"food API refused the order: HTTP {response.status}")
                try:
                    return await response.json(content_type=None)
                except ValueError:
                    return None
        except TimeoutError:
            raise _NotAnswered(f"food API did not answer within {self._timeout.total} s") from None
        except aiohttp.ClientError as exc:
            raise _NotAnswered(f"food API unreachable: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _NotAnswered(Exception):
    """The service did not decide (timeout, 5xx, 408, 429, dropped): safe to send again."""


#: 4xx answers that mean "not now" rather than "no".
_TRY_AGAIN = frozenset({408, 429})
_BACKOFF_BASE = 0.25
_BACKOFF_CAP = 5.0


def quote_lines(body: Any) -> list[QuoteLine]:
    """`{"lines": [{"label": str, "amount": int}, ...]}` as lines; FoodOrderError if not."""
    lines = body.get("lines") if isinstance(body, dict) else None
    if not isinstance(lines, list) or not lines:
        raise FoodOrderError("food API quote has no lines")
    found: list[QuoteLine] = []
    for line in lines:
        label = line.get("label") if isinstance(line, dict) else None
        amount = line.get("amount") if isinstance(line, dict) else None
        if not isinstance(label, str) or not isinstance(amount, int) or isinstance(amount, bool):
            raise FoodOrderError(f"food API quote line is malformed: {line!r}")
        if amount <= 0:
            raise FoodOrderError(f"food API quote line is not a positive amount: {line!r}")
        found.append((label, amount))
    return found


class LoggingFoodAPI:
    """Stands in when FOOD_API_URL is unset: the order is logged and counts as placed."""

    async def order_food(
        self,
        user_id: int,
        items: Sequence[str],
        *,
        idempotency_key: str,
        payment: Mapping[str, Any] | None = None,
    ) -> None:
        paid = f" (paid {payment['total_amount']} {payment['currency']})" if payment else ""
        logger.info("Order %s for user %s: %s%s", idempotency_key, user_id, ", ".join(items), paid)

    async def quote(self, user_id: int, items: Sequence[str]) -> list[QuoteLine]:
        return [(item, STAND_IN_PRICE) for item in items]

    async def close(self) -> None:
        """Nothing to release."""


def create_food_api(settings: FoodApiSettings) -> FoodAPI:
    """The HTTP food API when a URL is configured, else the logging stand-in."""
    if settings.url is None:
        return LoggingFoodAPI()
    quote_url = str(settings.quote_url) if settings.quote_url is not None else None
    return HttpFoodAPI(str(settings.url), settings.timeout, settings.retry_for, quote_url)
