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

    async def order_food(self, user_id: int, items: Sequence[str]) -> None:
        """Place an order of `items` for the Telegram user `user_id`."""

    async def close(self) -> None:
        """Release network resources; called once at shutdown."""


class HttpFoodAPI:
    """POSTs `{"user_id": ..., "items": [...]}` as JSON; any 2xx answer is success."""

    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # Created on first use: an aiohttp session must be made inside the running loop.
        self._session: aiohttp.ClientSession | None = None

    async def order_food(self, user_id: int, items: Sequence[str]) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        payload = {"user_id": user_id, "items": list(items)}
        try:
            async with self._session.post(self._url, json=payload) as response:
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

    async def order_food(self, user_id: int, items: Sequence[str]) -> None:
        logger.info("Order for user %s: %s", user_id, ", ".join(items))

    async def close(self) -> None:
        """Nothing to release."""


def create_food_api(settings: FoodApiSettings) -> FoodAPI:
    """The HTTP food API when a URL is configured, else the logging stand-in."""
    if settings.url is None:
        return LoggingFoodAPI()
    return HttpFoodAPI(str(settings.url), settings.timeout)
