"""Payments' rules (docs/payments.md): settings refused in one line, never showing the token, and
Telegram's invoice rules kept alike by the Bot API stand-in and the library's own check.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from botnodes.telegram.app import secrets_of
from botnodes.telegram.invoices import STARS, check_invoice
from botnodes.telegram.settings import ConfigError, load_settings
from botnodes.testing import BotTestClient, FakeTelegram
from botnodes.testing.fake_bot_api import Refusal

from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.settings import Settings

from ..ops.bot_process import SETTING_NAMES
from .paying import (
    ALICE,
    PROVIDER_TOKEN,
    PaidFoodAPI,
    checkout,
    texts,
    with_payments,
)

BOT_TOKEN = "123456:TEST-payments-edges"


# Settings: a mistake stops start-up with one line naming the setting; the token never shows --


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting of the developer's, and a BOT_TOKEN: the test sets the payment ones."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOT_TOKEN", BOT_TOKEN)
    return monkeypatch


def config_error() -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(Settings, None)
    return str(caught.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"PAYMENTS": "bogus"},
            "PAYMENTS: Input should be 'off', 'provider' or 'stars' (got 'bogus')",
        ),
        (
            {"PAYMENTS": "provider"},
            "PAYMENT_PROVIDER_TOKEN: is required with PAYMENTS=provider "
            "(@BotFather > your bot > Payments)",
        ),
        (
            {"PAYMENT_CURRENCY": "usd"},
            "PAYMENT_CURRENCY: must be a three-letter ISO 4217 code in capitals, like USD "
            "(got 'usd')",
        ),
        (
            {"PAYMENTS": "provider", "PAYMENT_CURRENCY": "US$"},
            "PAYMENT_CURRENCY: must be a three-letter ISO 4217 code in capitals, like USD "
            "(got 'US$')",
        ),
        (
            {"PAYMENTS": "provider", "PAYMENT_CURRENCY": "XTR"},
            "PAYMENT_CURRENCY: XTR is Telegram Stars: use PAYMENTS=stars",
        ),
        (
            {"PAYMENTS": "provider", "PAYMENT_CURRENCY": "eur"},
            "PAYMENT_CURRENCY: must be a three-letter ISO 4217 code in capitals, like USD "
            "(got 'eur')",
        ),
    ],
)
def test_a_bad_payment_setting_stops_start_up_with_one_line_naming_it_never_the_token(
    environment: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    if env.get("PAYMENTS") == "provider" and "PAYMENT_CURRENCY" in env:
        environment.setenv("PAYMENT_PROVIDER_TOKEN", PROVIDER_TOKEN)
    for name, value in env.items():
        environment.setenv(name, value)
    message = config_error()
    assert message == expected
    assert PROVIDER_TOKEN not in message
    assert PROVIDER_TOKEN.split(":")[-1] not in message


def test_the_provider_token_is_a_secret_kept_out_of_reprs_and_masked_in_logs(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("PAYMENTS", "provider")
    environment.setenv("PAYMENT_PROVIDER_TOKEN", PROVIDER_TOKEN)
    settings = load_settings(Settings, None)
    assert settings.payments.payment_provider_token == SecretStr(PROVIDER_TOKEN)
    assert PROVIDER_TOKEN not in repr(settings)
    assert PROVIDER_TOKEN not in str(settings.payments)
    # The log formatter masks every value secrets_of names (test_bot_config.py shows how).
    assert PROVIDER_TOKEN in secrets_of(settings)


async def test_stars_invoices_in_xtr_without_the_token_whatever_currency_is_set(
    settings: Settings, redis_client: Redis, paid_api: PaidFoodAPI
) -> None:
    """PAYMENTS=stars ignores PAYMENT_CURRENCY and PAYMENT_PROVIDER_TOKEN (docs: no token)."""
    telegram = FakeTelegram()
    stars = with_payments(
        settings,
        "stars",
        payment_currency="EUR",
        payment_provider_token=SecretStr(PROVIDER_TOKEN),
    )
    async with BotTestClient.start(
        BOT, stars, redis=redis_client, food_api=paid_api, telegram=telegram
    ) as client:
        replies = await checkout(client.user(ALICE), "Pizza")
    assert texts(replies)[1] == "Invoice: Your food order (1250 XTR)"
    [(_, invoice)] = telegram.invoices.items()
    assert invoice["currency"] == STARS
    assert not invoice.get("provider_token")


# Telegram's invoice rules: the stand-in refuses what the library's own check refuses -----------

GOOD_INVOICE: dict[str, Any] = {
    "chat_id": ALICE,
    "title": "Your food order",
    "description": "Pizza, Sushi",
    "payload": f"{ALICE}.{'A' * 22}",
    "currency": "USD",
    "prices": [{"label": "Pizza", "amount": 1250}, {"label": "Sushi", "amount": 899}],
    "provider_token": PROVIDER_TOKEN,
}


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"title": ""}, "INVOICE_TITLE_INVALID"),
        ({"title": "t" * 33}, "INVOICE_TITLE_INVALID"),
        ({"description": ""}, "INVOICE_DESCRIPTION_INVALID"),
        ({"description": "d" * 256}, "INVOICE_DESCRIPTION_INVALID"),
        ({"payload": ""}, "INVOICE_PAYLOAD_INVALID"),
        ({"payload": "é" * 65}, "INVOICE_PAYLOAD_INVALID"),  # 65 characters, 130 bytes
        ({"prices": []}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"prices": [{"label": "Pizza", "amount": 0}]}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"prices": [{"label": "Pizza", "amount": -5}]}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"prices": [{"label": "Pizza", "amount": 12.5}]}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"prices": [{"label": "Pizza", "amount": True}]}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        (
            {"currency": STARS, "provider_token": ""},  # two prices in Stars
            "STARS_INVOICE_INVALID",
        ),
    ],
)
def test_an_invoice_telegram_refuses_is_refused_by_the_stand_in_and_the_librarys_check(
    changes: dict[str, Any], error: str
) -> None:
    invoice = {**GOOD_INVOICE, **changes}
    with pytest.raises(Refusal) as refused:
        FakeTelegram().answer("sendInvoice", invoice)
    assert (refused.value.status, refused.value.description) == (400, f"Bad Request: {error}")
    with pytest.raises(ValueError, match="invoice"):
        check_invoice(
            invoice["title"],
            invoice["description"],
            invoice["payload"],
            invoice["currency"],
            [price["amount"] for price in invoice["prices"]],
        )


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"title": "t" * 32, "description": "d" * 255, "payload": "p" * 128},
        {"payload": "é" * 64},  # 128 bytes
        {"currency": STARS, "provider_token": "", "prices": [{"label": "All", "amount": 1}]},
    ],
)
def test_an_invoice_at_telegrams_limits_passes_both(changes: dict[str, Any]) -> None:
    invoice = {**GOOD_INVOICE, **changes}
    check_invoice(
        invoice["title"],
        invoice["description"],
        invoice["payload"],
        invoice["currency"],
        [price["amount"] for price in invoice["prices"]],
    )
    telegram = FakeTelegram()
    telegram.answer("sendInvoice", invoice)
    assert [call.ok for call in telegram.attempts("sendInvoice")] == [True]
