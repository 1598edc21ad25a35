# ruff: noqa: RUF001  - the Russian texts are meant to be Cyrillic
"""Pre-checkout (docs/payments.md): answered in time, from stored state, with the reason.

`ok` only for this user's unpaid invoice at its currency and amount while they are still on
its Checkout visit; refused in the user's language otherwise, never behind the user's turn,
and with "try again" when Redis does not answer within `decide_within`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from botnodes.telegram.payments import PRE_CHECKOUT_DEADLINE, PaymentDesk
from botnodes.testing import BotTestClient

from {{ cookiecutter.project_slug }}.nodes.checkout import Checkout

from .paying import (
    ALICE,
    ALREADY_PAID,
    BOB,
    MISMATCH,
    STALE,
    PaidFoodAPI,
    checkout,
    last_invoice,
    payment_updates,
    texts,
)

# Pre-checkout: answered from stored state, refused with the reason ----------------------------


@pytest.mark.parametrize("leave", ["Cancel", "/start", "expiry"])
async def test_an_invoice_whose_checkout_was_left_is_refused_at_pre_checkout(
    stars: BotTestClient, paid_api: PaidFoodAPI, leave: str
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    if leave == "Cancel":
        replies = await alice.click("Cancel")
        assert texts(replies)[0] == "Order cancelled! The invoice above can no longer be paid."
    elif leave == "/start":
        await alice.send("/start")
    else:
        await stars.advance(hours=24)  # CART_EXPIRES_AFTER
        assert alice.replies()[-2].text == "Your cart expired."
    payment = await alice.pay()
    assert (payment.ok, payment.error, payment.replies) == (False, STALE, [])
    assert paid_api.orders == []


async def test_a_new_checkout_makes_the_older_invoice_stale(
    stars: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    old = last_invoice(alice)
    await alice.click("Cancel")
    await checkout(alice, "Sushi")
    refused = await alice.pay(invoice=old)
    assert (refused.ok, refused.error) == (False, STALE)
    paid = await alice.pay()
    assert paid.ok
    assert [order["items"] for order in paid_api.orders] == [["Sushi"]]


@pytest.mark.parametrize(
    "forgery",
    [
        {"total_amount": 1},
        {"currency": "USD"},
        {"payload": f"{ALICE}.{'A' * 22}"},  # well formed, but no such invoice
        {"payload": f"{BOB}.{'A' * 22}"},
        {"payload": "not-a-payload"},
    ],
)
async def test_a_changed_amount_currency_or_payload_is_refused_as_not_matching(
    stars: BotTestClient, paid_api: PaidFoodAPI, forgery: dict[str, Any]
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    payment = await alice.pay(**forgery)
    assert (payment.ok, payment.error) == (False, MISMATCH)
    assert paid_api.orders == []
    assert isinstance(await alice.node(), Checkout)  # the real invoice can still be paid
    assert (await alice.pay()).ok


async def test_another_user_cannot_pay_an_invoice(stars: BotTestClient) -> None:
    alice, bob = stars.user(ALICE), stars.user(BOB, username="bob")
    await checkout(alice, "Pizza")
    invoice = last_invoice(alice)
    payment = await bob.pay(invoice=invoice)
    assert (payment.ok, payment.error) == (False, MISMATCH)


async def test_a_paid_invoice_is_refused_as_already_paid(
    stars: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    invoice = last_invoice(alice)
    assert (await alice.pay()).ok
    again = await alice.pay(invoice=invoice)
    assert (again.ok, again.error) == (False, ALREADY_PAID)
    assert len(paid_api.orders) == 1


async def test_the_refusal_is_in_the_users_language(stars: BotTestClient) -> None:
    ivan = stars.user(BOB, username="ivan", language_code="ru")
    await ivan.send("привет")
    await ivan.click("Да")
    await ivan.send("Пицца")
    await ivan.click("Заказать")
    payment = await ivan.pay(total_amount=1)
    assert payment.error == "Этот счёт не совпадает с вашим заказом."


async def test_pre_checkout_does_not_wait_for_the_users_turn(
    stars: BotTestClient, paid_api: PaidFoodAPI
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    # Alice's next message is stuck mid-step (its reply never answered): her turn is taken.
    reached = asyncio.Event()

    def to_alice(params: dict[str, Any]) -> bool:
        reached.set()
        return int(params["chat_id"]) == ALICE

    stars.telegram.fail("sendMessage", stall=True, match=to_alice)
    stuck = asyncio.create_task(alice.send("are you there?"))
    try:
        await reached.wait()
        query, _ = payment_updates(stars, ALICE)
        async with asyncio.timeout(PRE_CHECKOUT_DEADLINE):
            await stars.feed(query)
        [answer] = stars.telegram.pre_checkout_answers[query["pre_checkout_query"]["id"]]
        assert answer["ok"] is True
        assert not stuck.done()
    finally:
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck


async def test_pre_checkout_gives_up_on_a_stalled_redis_with_try_again(
    stars: BotTestClient, redis_client: Redis
) -> None:
    alice = stars.user(ALICE)
    await checkout(alice, "Pizza")
    desk = stars.ctx.payments  # type: ignore[attr-defined]
    assert isinstance(desk, PaymentDesk)
    desk.decide_within = 0.2
    await redis_client.client_pause(1500, all=True)
    try:
        payment = await alice.pay()
    finally:
        await redis_client.client_unpause()
    assert (payment.ok, payment.error) == (
        False,
        "Sorry, I can't check this payment right now. Please try again in a moment.",
    )
    assert payment.answered_in < PRE_CHECKOUT_DEADLINE
