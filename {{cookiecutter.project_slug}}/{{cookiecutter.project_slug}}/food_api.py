"""The food API a finished order is sent to.

Nodes depend on the `FoodAPI` protocol only, so tests and other deployments can plug in
their own implementation; `create_food_api` picks one from the settings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import aiohttp

from .config import FoodApiSettings

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
    so a service that honours it takes a repeated order once.
    """

    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # Created on first use: an aiohttp session must be made inside the running loop.
        self._session: aiohttp.ClientSession | None = None

    async def order_food(self, user_id: int, items: Sequence[str], *, idempotency_key: str) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        payload = {"user_id": user_id, "items": list(items)}
        headers = {"Idempotency-Key": idempotency_key}
        try:
            async with self._session.post(self._url, json=payload, headers=headers) as response:
                if not 200 <= response.status < 300:
                    raise FoodOrderError(f"food API answered HTTP {response.status}")
        except TimeoutError:
            raise FoodOrderError(
                f"food API did not answer within {self._timeout.total} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise FoodOrderError(f"food API unreachable: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


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
    return HttpFoodAPI(str(settings.url), settings.timeout)
