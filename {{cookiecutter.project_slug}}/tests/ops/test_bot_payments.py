"""Payments in real processes: a polling bot with a provider takes a payment and never logs
the token; a webhook bot with Stars asks Telegram for pre-checkout queries and answers them.
"""

from __future__ import annotations

import json
import signal

from botnodes.testing import FakeBotAPIServer

from .polling import (
    ALICE,
    MAIN_MENU,
    StartBot,
    assert_clean_log,
)
from .replicas import StartReplica, update_ids

PROVIDER_TOKEN = "284685063:TEST:e2e-provider-token-never-logged"


async def test_a_polling_bot_with_payments_asks_for_pre_checkout_and_takes_a_payment(
    bot_api: FakeBotAPIServer, start_bot: StartBot
) -> None:
    bot = await start_bot(PAYMENTS="provider", PAYMENT_PROVIDER_TOKEN=PROVIDER_TOKEN)
    allowed = json.loads(bot_api.calls("getUpdates")[0].params["allowed_updates"])
    assert sorted(allowed) == [
        "callback_query",
        "message",
        "my_chat_member",
        "pre_checkout_query",
    ]
    await bot_api.say(ALICE, "hi", 1)
    await bot_api.say(ALICE, "Yes", 2)
    await bot_api.say(ALICE, "Pizza", 2)
    assert await bot_api.say(ALICE, "Finish", 2) == [
        "Ordering Pizza",
        "To pay 1.00 USD, press Pay on the invoice above. Cancel drops the order.",
    ]
    _, invoice = bot_api.telegram.last_invoice(ALICE)
    assert invoice["provider_token"] == PROVIDER_TOKEN  # sent to Telegram, and only there
    query, paid = bot_api.telegram.pay_updates(
        (bot_api.next_update_id(), bot_api.next_update_id()), ALICE, invoice
    )
    answers = bot_api.telegram.pre_checkout_answers[query["pre_checkout_query"]["id"]]
    await bot_api.push_update(query)
    await bot_api.wait_for(lambda: bool(answers), 15, "the pre-checkout answer")
    assert [answer["ok"] for answer in answers] == [True]
    before = len(bot_api.sent_texts(ALICE))
    await bot_api.push_update(paid)
    await bot_api.wait_for(lambda: len(bot_api.sent_texts(ALICE)) >= before + 2, 15, "Ordered!")
    assert bot_api.sent_texts(ALICE)[before:] == ["Ordered!", MAIN_MENU]
    assert await bot.stop(signal.SIGTERM) == 0
    assert "for user 5001: Pizza (paid 100 USD)" in bot.log()
    assert PROVIDER_TOKEN not in bot.log()  # LOG_LEVEL=DEBUG logs the calls, masked
    assert PROVIDER_TOKEN.rsplit(":", maxsplit=1)[-1] not in bot.log()
    assert_clean_log(bot)


async def test_a_webhook_bot_with_payments_asks_for_pre_checkout_and_answers_it(
    bot_api: FakeBotAPIServer, start_replica: StartReplica
) -> None:
    replica = await start_replica(PAYMENTS="stars")
    [set_webhook] = bot_api.calls("setWebhook")
    assert sorted(json.loads(set_webhook.params["allowed_updates"])) == [
        "callback_query",
        "message",
        "my_chat_member",
        "pre_checkout_query",
    ]
    # A query for an invoice the bot never sent: posted here, answered no, in time.
    forged = {"payload": f"{ALICE}.{'A' * 22}", "currency": "XTR", "prices": [{"amount": 5}]}
    query, _ = bot_api.telegram.pay_updates((next(update_ids), next(update_ids)), ALICE, forged)
    answers = bot_api.telegram.pre_checkout_answers[query["pre_checkout_query"]["id"]]
    assert await replica.post(query) == 200
    await bot_api.wait_for(lambda: bool(answers), 15, "the pre-checkout answer")
    assert [(a["ok"], a["error_message"]) for a in answers] == [
        (False, "This invoice doesn't match your order.")
    ]
    assert await replica.process.stop(signal.SIGTERM) == 0
