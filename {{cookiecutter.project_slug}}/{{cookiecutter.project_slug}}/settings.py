"""This bot's own settings, on top of the runtime's (`BotSettings`).

To add a setting: put a field in one of the classes below (or a new `BaseSettings` class,
then a field of that type in `Settings`), list it in `.env.example`, and read it in a node as
`ctx.settings.<section>.<field>`. It is read from the environment and `.env` like every other
setting, and a bad value stops start-up with one line naming it. A test fails when
`.env.example` misses a setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import Field, HttpUrl
from pydantic_settings import BaseSettings

from botnodes.telegram.invoices import PaymentSettings
from botnodes.telegram.settings import BotSettings, Duration, settings_config


class FoodApiSettings(BaseSettings):
    """Where finished orders go (and, with payments on, where their price comes from)."""

    model_config = settings_config("FOOD_API_")

    url: HttpUrl | None = None
    # Asked for the cart's price before an invoice is sent (docs/payments.md).
    quote_url: HttpUrl | None = None
    timeout: float = Field(default=10.0, gt=0)
    # An order the service did not answer (timeout, 5xx, dropped) is sent again, with the
    # same idempotency key, for this long before the user is told it failed.
    retry_for: float = Field(default=60.0, ge=0, le=86_400)


class CartSettings(BaseSettings):
    """What one cart may hold: every message costs what the cart holds, so it is bounded."""

    model_config = settings_config()

    max_dish_name_length: int = Field(default=100, ge=1, le=1000)
    max_cart_items: int = Field(default=50, ge=1, le=1000)
    # A cart left alone: reminded once after this long (0 = never), dropped after that
    # long (0 = kept until the state expires). Counted from the user's last message.
    cart_reminder_after: Duration = timedelta(minutes=30)
    cart_expires_after: Duration = timedelta(hours=24)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings(BotSettings):
    """Every setting of this bot: the runtime's sections and its own."""

    food_api: FoodApiSettings = field(default_factory=lambda: FoodApiSettings(_env_file=None))
    cart: CartSettings = field(default_factory=lambda: CartSettings(_env_file=None))
    #: Telegram Payments: PAYMENTS=off (the default) orders at Finish, as ever.
    payments: PaymentSettings = field(default_factory=lambda: PaymentSettings(_env_file=None))
