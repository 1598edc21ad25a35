"""The food API a finished order is sent to.

Nodes depend on the `FoodAPI` protocol only, so tests and other deployments can plug in
their own implementation; `create_food_api` picks one from the settings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

import aiohttp

from .settings import FoodApiSettings

logger = logging.getLogger(__name__)


class FoodOrderError(Exception):
    """The order was not accepted; the message says why and is safe to log."""


class FoodAPI(Protocol):
    """Places orders. Implementations raise `FoodOrderError` for every failure."""

    async def order_food(self, user_id: int, items: Sequence[str], *, idempotency_key: str) -> None:
        """Place an order of `items` for the Telegram user `user_id`.

        The same `idempotency_key` means the same order: a service that honours it places
        it once however often it is sent (after a crash, or a retried step).
        """

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

    def __init__(self, url: str, timeout: float, retry_for: float = 0.0) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry_for = retry_for
        # Created on first use: an aiohttp session must be made inside the running loop.
        self._session: aiohttp.ClientSession | None = None

    async def order_food(self, user_id: int, items: Sequence[str], *, idempotency_key: str) -> None:
        give_up = time.monotonic() + self._retry_for
        attempt = 0
        while True:
            try:
                await self._post(user_id, items, idempotency_key)
                return
            except _NotAnswered as exc:
                attempt += 1
                delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)
                if time.monotonic() + delay > give_up:
                    raise FoodOrderError(f"{exc} (tried {attempt} time(s))") from None
                logger.warning(
                    "Order %s not answered (%s); sending it again in %.1f s",
                    idempotency_key,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _post(self, user_id: int, items: Sequence[str], idempotency_key: str) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        payload = {"user_id": user_id, "items": list(items)}
        headers = {"Idempotency-Key": idempotency_key}
        try:
            async with self._session.post(self._url, json=payload, headers=headers) as response:
                if response.status >= 500 or response.status in _TRY_AGAIN:
                    raise _NotAnswered(f"food API answered HTTP {response.status}")
                if not 200 <= response.status < 300:
                    raise FoodOrderError(f"food API refused the order: HTTP {response.status}")
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


class LoggingFoodAPI:
    """Stands in when FOOD_API_URL is unset: the order is logged and counts as placed."""

    async def order_food(self, user_id: int, items: Sequence[str], *, idempotency_key: str) -> None:
        logger.info("Order %s for user %s: %s", idempotency_key, user_id, ", ".join(items))

    async def close(self) -> None:
        """Nothing to release."""


def create_food_api(settings: FoodApiSettings) -> FoodAPI:
    """The HTTP food API when a URL is configured, else the logging stand-in."""
    if settings.url is None:
        return LoggingFoodAPI()
    return HttpFoodAPI(str(settings.url), settings.timeout, settings.retry_for)
