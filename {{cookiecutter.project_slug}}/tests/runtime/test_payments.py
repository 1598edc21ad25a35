"""Telegram Payments through the real dispatcher, botnodes and Redis (docs/payments.md).

With PAYMENTS=stars or provider: Finish sends an invoice at the quoted price, a payment
places the order exactly once (re-delivered, on two replicas, after a crash), and a payment
that can't become an order is refunded once. Pre-checkout is in test_payments_pre_checkout.py;
settings and the invoice rules in test_payments_rules.py, the quote over HTTP in
test_payments_quote.py, PAYMENTS=off, /paysupport and `chat`'s `:pay` in test_payments_edges.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from botnodes.telegram.payments import PRE_CHECKOUT_DEADLINE
from botnodes.testing import BotTestClient, FakeTelegram

from {{ cookiecutter.project_slug }}.food_api import FoodOrderError, FoodOrderRefused
from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.nodes import Hungry, Start
from {{ cookiecutter.project_slug }}.nodes.checkout import Checkout
from {{ cookiecutter.project_slug }}.settings import Settings

from .paying import (
    ALICE,
    MAIN_MENU,
    ORDERED,
    PROVIDER_TOKEN,
    STAFF,
    PaidFoodAPI,
    charge_of,
    checkout,
    payment_updates,
    staff_texts,
    texts,
    with_payments,
)

# The invoice: the quoted price, in XTR for Stars, else PAYMENT_CURRENCY --------------------


async def test_stars_finish_sends_one_invoice_of_the_quoted_total_in_xtr(
    stars: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = stars.user(ALICE)
    replies = await checkout(alice, "Pizza", "Sushi")
    assert texts(replies) == [
        "Ordering Pizza, Sushi",
        "Invoice: Your food order (2149 XTR)",
        "To pay 2149 XTR, press Pay on the invoice above. Cancel drops the order.",
    ]
    assert paid_api.quotes == [["Pizza", "Sushi"]]
    [(_, invoice)] = stars.telegram.invoices.items()
    assert invoice["currency"] == "XTR"
    assert invoice["prices"] == [{"label": "Your food order", "amount": 2149}]  # one price
    assert "provider_token" not in invoice or not invoice["provider_token"]
    assert invoice["description"] == "Pizza, Sushi"
    assert str(invoice["payload"]).startswith(f"{ALICE}.")
    assert len(str(invoice["payload"]).encode()) <= 128
    assert paid_api.orders == []  # nothing is ordered before it is paid
    assert isinstance(await alice.node(), Checkout)


async def test_provider_invoice_has_the_quoted_lines_in_payment_currency_and_the_token(
    settings: Settings, redis_client: Redis, paid_api: PaidFoodAPI
) -> None:
    telegram = FakeTelegram()
    eur = with_payments(settings, "provider", payment_currency="EUR")
    async with BotTestClient.start(
        BOT, eur, redis=redis_client, food_api=paid_api, telegram=telegram
    ) as client:
        replies = await checkout(client.user(ALICE), "Pizza", "Sushi")
    assert texts(replies)[1:] == [
        "Invoice: Your food order (2149 EUR)",
        "To pay 21.49 EUR, press Pay on the invoice above. Cancel drops the order.",
    ]
    [(_, invoice)] = telegram.invoices.items()
    assert invoice["currency"] == "EUR"
    assert invoice["prices"] == [
        {"label": "Pizza", "amount": 1250},
        {"label": "Sushi", "amount": 899},
    ]
    assert invoice["provider_token"] == PROVIDER_TOKEN


async def test_the_invoice_of_a_cart_too_long_for_telegram_is_still_valid(
    stars: BotTestClient,
) -> None:
    alice = stars.user(ALICE)
    replies = await checkout(alice, *(f"{n:02d} " + "x" * 97 for n in range(8)))
    assert replies[1].text == "Invoice: Your food order (800 XTR)"
    [(_, invoice)] = stars.telegram.invoices.items()
    assert len(invoice["description"]) <= 255
    assert invoice["description"].endswith("…")


# Paying: one order, placed with the payment and its own key -----------------------------------


async def test_a_stars_payment_places_the_order_once_and_tells_user_and_staff(
    stars: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza", "Sushi")
    payment = await alice.pay()
    assert payment.ok
    assert payment.error is None
    assert payment.answered_in < PRE_CHECKOUT_DEADLINE
    assert texts(payment.replies) == [ORDERED, MAIN_MENU]
    assert paid_api.orders == [
        {
            "user_id": ALICE,
            "items": ["Pizza", "Sushi"],
            "key": f"{ALICE}:paid:{payment.charge_id}",
            "payment": {
                "currency": "XTR",
                "total_amount": 2149,
                "telegram_payment_charge_id": payment.charge_id,
                "provider_payment_charge_id": "",
            },
        }
    ]
    assert isinstance(await alice.node(), Start)
    assert staff_texts(stars) == [
        f"Paid order from @alice ({ALICE}): Pizza, Sushi. Total 2149 XTR "
        f"(charge {payment.charge_id})."
    ]
    assert stars.telegram.refunds == []


async def test_a_provider_payment_orders_with_both_charge_ids(
    provider: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = provider.user(ALICE)
    await checkout(alice, "Pizza")
    payment = await alice.pay()
    assert texts(payment.replies) == [ORDERED, MAIN_MENU]
    [order] = paid_api.orders
    assert order["payment"] == {
        "currency": "USD",
        "total_amount": 1250,
        "telegram_payment_charge_id": payment.charge_id,
        "provider_payment_charge_id": f"pr-{payment.charge_id}",
    }
    assert staff_texts(provider)[0].endswith(f"Total 12.50 USD (charge {payment.charge_id}).")


async def test_a_redelivered_payment_orders_nothing_more(
    stars: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    payment = await alice.pay()
    for _ in range(2):
        await stars.feed(payment.update)  # Telegram delivers the payment again
    assert len(paid_api.orders) == 1
    assert texts(alice.replies()).count(ORDERED) == 1
    assert len(staff_texts(stars)) == 1
    assert stars.telegram.refunds == []


async def test_one_payment_on_two_replicas_at_once_orders_once(
    settings: Settings, redis_client: Redis, paid_api: PaidFoodAPI
) -> None:
    both, telegram = with_payments(settings, "stars"), FakeTelegram()
    shared: dict[str, Any] = {"redis": redis_client, "food_api": paid_api, "telegram": telegram}
    async with (
        BotTestClient.start(BOT, both, **shared) as one,
        BotTestClient.start(BOT, both, **shared) as two,
    ):
        alice = one.user(ALICE)
        await checkout(alice, "Pizza")
        query, paid = payment_updates(one, ALICE)
        await two.feed(query)  # pre-checkout on the other replica: the same stored state
        assert telegram.pre_checkout_answers[query["pre_checkout_query"]["id"]][0]["ok"] is True
        await asyncio.gather(one.feed(paid), two.feed(paid), one.feed(paid))
        assert len(paid_api.orders) == 1
        assert texts(alice.replies()).count(ORDERED) == 1
        assert len(telegram.sent_texts(STAFF)) == 1


async def test_a_claim_left_by_a_crash_expires_and_the_redelivery_orders_with_the_same_key(
    stars: BotTestClient, paid_api: PaidFoodAPI, redis_client: Redis, state_key: str
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    query, paid = payment_updates(stars, ALICE)
    await stars.feed(query)
    charge = charge_of(paid)
    claim = state_key + ":{" + str(ALICE) + "}:charge:" + charge
    # A replica claimed the charge and died before ordering: its claim is all that is left.
    await redis_client.set(claim, "claimed", px=300_000)
    await stars.feed(paid)
    assert paid_api.orders == []  # claimed elsewhere: not ordered twice meanwhile
    assert 0 < await redis_client.pttl(claim) <= 300_000  # the claim expires (5 minutes)
    await redis_client.delete(claim)  # ... as it does, 5 minutes later
    await stars.feed(paid)  # Telegram's re-delivery
    assert [order["key"] for order in paid_api.orders] == [f"{ALICE}:paid:{charge}"]
    await stars.feed(paid)
    assert len(paid_api.orders) == 1


async def test_a_payment_delivered_again_while_its_order_is_in_flight_waits_for_nothing(
    stars: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    query, paid = payment_updates(stars, ALICE)
    await stars.feed(query)
    paid_api.hold = True
    first = asyncio.create_task(stars.feed(paid))
    await paid_api.in_flight.wait()
    await stars.feed(paid)  # claimed and busy: returns without ordering
    assert paid_api.orders == []
    assert not first.done()
    paid_api.release.set()
    await first
    assert len(paid_api.orders) == 1
    assert texts(alice.replies()).count(ORDERED) == 1


# A payment that can't become an order: one refund ---------------------------------------------


async def test_a_refused_stars_order_is_refunded_once(
    stars: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    paid_api.errors = [FoodOrderRefused("food API refused the order: HTTP 409")]
    payment = await alice.pay()
    assert texts(payment.replies) == [
        "The restaurant couldn't take your order, so your 1250 XTR has been refunded."
    ]
    assert stars.telegram.refunds == [payment.charge_id]
    await stars.feed(payment.update)
    assert stars.telegram.refunds == [payment.charge_id]
    assert [c.ok for c in stars.telegram.attempts("refundStarPayment")] == [True]
    assert paid_api.orders == []


async def test_a_refused_provider_order_asks_the_staff_for_the_refund(
    provider: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = provider.user(ALICE)
    await checkout(alice, "Pizza", "Sushi")
    paid_api.errors = [FoodOrderRefused("food API refused the order: HTTP 409")]
    payment = await alice.pay()
    assert texts(payment.replies) == [
        "The restaurant couldn't take your order. A refund of 21.49 USD is on its way."
    ]
    assert provider.telegram.attempts("refundStarPayment") == []
    assert staff_texts(provider) == [
        f"Refund to make: 21.49 USD to @alice ({ALICE}) (charge {payment.charge_id}). "
        "Reason: the food service refused the order: food API refused the order: HTTP 409"
    ]
    await provider.feed(payment.update)
    assert len(staff_texts(provider)) == 1


async def test_an_unanswered_paid_order_is_not_refunded_blind(
    stars: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    paid_api.errors = [FoodOrderError("food API answered HTTP 503 (tried 5 time(s))")]
    payment = await alice.pay()
    assert texts(payment.replies) == [
        "You paid, but the restaurant hasn't confirmed your order yet. Our staff will check "
        "it and get back to you."
    ]
    assert stars.telegram.refunds == []
    [staff] = staff_texts(stars)
    assert staff.startswith(f"Refund to make: 1250 XTR to @alice ({ALICE})")
    assert staff.endswith("Reason: order not confirmed by the food service: check it")
    await stars.feed(payment.update)
    assert paid_api.orders == []  # not sent again blind: the staff check
    assert len(staff_texts(stars)) == 1


async def test_a_second_charge_for_a_paid_invoice_is_refunded(
    stars: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    _, second = payment_updates(stars, ALICE)
    first = await alice.pay()
    # Two payment windows were open: the second charge went through at Telegram as well.
    await stars.feed(second)
    charge = charge_of(second)
    assert stars.telegram.refunds == [charge]
    assert first.charge_id != charge
    assert len(paid_api.orders) == 1
    assert alice.replies()[-1].text == (
        "The restaurant couldn't take your order, so your 1250 XTR has been refunded."
    )


async def test_a_refund_telegram_already_made_counts_as_done(
    stars: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    query, paid = payment_updates(stars, ALICE)
    charge = charge_of(paid)
    stars.telegram.refunds.append(charge)  # refunded before (say, by hand)
    paid_api.errors = [FoodOrderRefused("food API refused the order: HTTP 409")]
    await stars.feed(query)
    await stars.feed(paid)
    assert alice.replies()[-1].text.endswith("your 1250 XTR has been refunded.")
    assert staff_texts(stars) == []  # nothing for the staff to do


async def test_a_payment_for_an_unknown_invoice_orders_nothing_and_tells_the_staff(
    stars: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    _, invoice = stars.telegram.last_invoice(ALICE)
    forged = {**invoice, "payload": f"{ALICE}.{'B' * 22}"}
    ids = (stars.next_update_id(), stars.next_update_id())
    _, paid = stars.telegram.pay_updates(ids, ALICE, forged)
    await stars.feed(paid)
    charge = charge_of(paid)
    assert paid_api.orders == []
    assert staff_texts(stars) == [
        f"Refund to make: 1250 XTR to @alice ({ALICE}) (charge {charge}). Reason: unknown invoice"
    ]
    assert isinstance(await alice.node(), Checkout)  # her real invoice is untouched


async def test_a_stale_invoice_paid_anyway_is_ordered_and_leaves_the_user_where_they_are(
    stars: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    query, paid = payment_updates(stars, ALICE)
    await stars.feed(query)  # ok: she was on the invoice's Checkout then
    await alice.click("Cancel")
    await alice.send("Yes")
    await alice.send("Sushi")  # a new cart while the money moves
    await stars.feed(paid)
    assert [order["items"] for order in paid_api.orders] == [["Pizza"]]
    node = await alice.node()
    assert isinstance(node, Hungry)
    assert node._data.order == ["Sushi"]
