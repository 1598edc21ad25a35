"""Fixtures of the payment tests: the bot with PAYMENTS=stars or provider (docs/payments.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from botnodes.testing import BotTestClient

from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.settings import Settings

from .paying import PaidFoodAPI, with_payments


@pytest.fixture
def paid_api() -> PaidFoodAPI:
    return PaidFoodAPI()


@pytest.fixture
async def stars(
    settings: Settings, redis_client: Redis, paid_api: PaidFoodAPI
) -> AsyncIterator[BotTestClient]:
    """The bot with PAYMENTS=stars and a staff chat; `paid_api` is its food API."""
    paying = with_payments(settings, "stars")
    async with BotTestClient.start(BOT, paying, redis=redis_client, food_api=paid_api) as client:
        yield client


@pytest.fixture
async def provider(
    settings: Settings, redis_client: Redis, paid_api: PaidFoodAPI
) -> AsyncIterator[BotTestClient]:
    """The bot with PAYMENTS=provider (USD, a test token) and a staff chat."""
    paying = with_payments(settings, "provider")
    async with BotTestClient.start(BOT, paying, redis=redis_client, food_api=paid_api) as client:
        yield client
