"""Pre-checkout under load: `python bench/payments.py [--users 100] [--chatter 5]` (issue 29).

Bakes the template (as `run.py` does), starts a private `redis-server`, and builds the baked
bot in this process with `PAYMENTS=stars`, the way `flows.build_botnodes` builds the botnodes
variant: the bot's own `BOT`, settings (`load_settings`), context (`create_ctx`, so its own
`PaymentDesk`), `create_nodes`, dispatcher and send limits, replying through the bake's Bot
API stand-in (`botnodes/testing/fake_bot_api/`), which takes invoices, pre-checkout answers
and refunds as Telegram does. Only the food API (an external service) is replaced, by one that
quotes every item at the bot's stand-in price and counts the orders.

`--users` users are in flight at once. Each walks the food flow to `Finish` (the cart is
priced, the invoice sent) and then, at once, sends `--chatter` ordinary messages and pays: the
`pre_checkout_query` is fed while that user's own messages are still queued in the bot, then
the `successful_payment`. Measured: the time from feeding a `pre_checkout_query` to its
`answerPreCheckoutQuery` reaching the stand-in (p50 / p99 / max), against the same with one
user at a time on an idle bot, and against how long the ordinary messages of the same users
took meanwhile; then what came of the payments: every query answered once and ok, orders
placed == payments (one order per charge, each under its own idempotency key), refunds 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import gc
import importlib
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as `python bench/payments.py`
    sys.path.insert(0, str(REPO_ROOT))

from aiogram.types import Update  # noqa: E402

from bench import flows  # noqa: E402
from bench.flows import Variant, make_update, username  # noqa: E402
from bench.redis_client import create_client  # noqa: E402
from bench.run import bake, fake_bot_api, machine, redis_server, versions  # noqa: E402

#: What each user orders before paying, and what they say while the payment goes on.
CART = ("Pizza", "Soup")
CHATTER_TEXT = "Is it on its way?"
#: Telegram cancels a payment whose pre-checkout query is not answered within this.
TELEGRAM_DEADLINE_S = 10.0
#: User id ranges per phase, so no phase finds another phase's state.
WARM_UP_BASE, IDLE_BASE, LOAD_BASE = 30_000_000, 31_000_000, 32_000_000
WARM_UP_USERS = 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100, help="users in flight at once")
    parser.add_argument(
        "--chatter",
        type=int,
        default=5,
        help="ordinary messages each user sends at the moment they pay",
    )
    parser.add_argument(
        "--idle-users", type=int, default=50, help="users paying one at a time, for comparison"
    )
    parser.add_argument("--template", type=Path, default=REPO_ROOT)
    parser.add_argument(
        "--redis-url", help="use this (private, idle) Redis instead of starting one"
    )
    parser.add_argument("--redis-server", default="redis-server")
    return parser.parse_args(argv)


class CountingFoodAPI:
    """The food API as the bot's stand-in prices it (`STAND_IN_PRICE` an item), counting orders."""

    def __init__(self, price: int) -> None:
        self.price = price
        #: Every order call: (user id, idempotency key, the payment field).
        self.orders: list[tuple[int, str, Mapping[str, Any] | None]] = []

    async def order_food(
        self,
        user_id: int,
        items: Sequence[str],
        *,
        idempotency_key: str = "",
        payment: Mapping[str, Any] | None = None,
    ) -> None:
        self.orders.append((user_id, idempotency_key, payment))

    async def quote(self, user_id: int, items: Sequence[str]) -> list[tuple[str, int]]:
        return [(item, self.price) for item in items]

    async def close(self) -> None:
        """Nothing to release."""


def build_paying_bot(redis: Any, prefix: str, package: str) -> tuple[Variant, Any]:
    """The baked bot with PAYMENTS=stars, built as `flows.build_botnodes` builds it.

    The context is the bot's own (`create_ctx`: its `PaymentDesk`, its languages) with the
    food API replaced, as the test client's `food_api=` does. Returns the variant and the
    bot's `Texts` (to recognise its payment messages).
    """
    app = flows.runtime_module(package, "app")
    definition = flows.bot_definition(package)
    os.environ.update(BOT_TOKEN=flows.BOT_TOKEN, STATE_KEY=prefix, PAYMENTS="stars")
    settings_module = flows.runtime_module(package, "settings")
    settings = settings_module.load_settings(definition.settings_class, env_file=None)
    if not settings.payments.enabled:
        sys.exit("the bake's settings did not take PAYMENTS=stars")
    session = flows.FAKE_BOT_API.FakeSession()
    bot = flows.Bot(flows.BOT_TOKEN, session=session)
    languages = app.create_languages(definition, settings, redis)
    food_module = importlib.import_module(f"{package}.food_api")
    food_api = CountingFoodAPI(food_module.STAND_IN_PRICE)
    built = definition.create_ctx(bot, languages, settings)
    ctx = dataclasses.replace(built, food_api=food_api)
    # As `App` builds it: the step's sends reserved by the commit script (`limiter`).
    limiter = flows.send_limiter(package, redis, prefix)
    nodes = app.create_nodes(definition, settings, redis, ctx, limiter=limiter)
    dispatcher = flows.bot_dispatcher(package, nodes, languages)
    limits = flows.add_send_limits(package, dispatcher, session, redis, prefix, limiter, nodes)

    async def close_ctx() -> None:
        await ctx.aclose()
        await built.aclose()

    variant = Variant(
        "botnodes",
        dispatcher,
        bot,
        session,
        redis,
        food_api,  # type: ignore[arg-type]  # the NullFoodAPI of the other variants can't quote
        {"payments": settings.payments.payments, "send limits": limits, "prefix": prefix},
        closers=[close_ctx],
        handles={"nodes": nodes, "settings": settings, "definition": definition},
    )
    return variant, importlib.import_module(f"{package}.texts").TEXTS


def _update(variant: Variant, data: dict[str, Any]) -> Update:
    """Bound to the bot as polling delivers it (see `flows.make_update`)."""
    return Update.model_validate(data, context={"bot": variant.bot})


class Customer:
    """One user: the flow to the invoice, then ordinary messages and the payment at once."""

    def __init__(self, variant: Variant, user_id: int, chatter: int) -> None:
        self.variant, self.user_id, self.chatter = variant, user_id, chatter
        self.answer_s: float | None = None
        self.answers: list[dict[str, Any]] = []
        #: This user's events held or waiting in botnodes' per-user queue when the query came.
        self.queued_when_asked = 0
        self.charge = ""
        self.message_s: list[float] = []
        self.errors: list[str] = []

    async def _feed(self, update: Update) -> None:
        try:
            await self.variant.feed(update)
        except Exception as error:
            self.errors.append(f"{type(error).__name__}: {error}")

    async def _timed(self, update: Update) -> None:
        began = time.perf_counter()
        await self._feed(update)
        self.message_s.append(time.perf_counter() - began)

    async def run(self) -> None:
        variant, uid = self.variant, self.user_id
        for text in ("hi", "Yes", *CART, "Finish"):
            await self._feed(make_update(variant.bot, uid, text))
        telegram = variant.session.telegram
        try:
            _, invoice = telegram.last_invoice(uid)
        except LookupError as error:
            self.errors.append(f"no invoice: {error}")
            return
        ids = (next(flows._update_ids), next(flows._update_ids))
        query, paid = telegram.pay_updates(
            ids, uid, invoice, username=username(uid), first_name="Bench"
        )
        query_id = query["pre_checkout_query"]["id"]
        self.charge = paid["message"]["successful_payment"]["telegram_payment_charge_id"]
        query_update, paid_update = _update(variant, query), _update(variant, paid)
        chatter = [make_update(variant.bot, uid, CHATTER_TEXT) for _ in range(self.chatter)]
        tasks = [asyncio.create_task(self._timed(update)) for update in chatter]
        # The query goes in once this user's messages hold or wait for their turn in botnodes.
        for _ in range(10_000):
            self.queued_when_asked = _queued(variant, uid)
            if self.queued_when_asked or not self.chatter or all(t.done() for t in tasks):
                break
            await asyncio.sleep(0)
        fed = time.monotonic()  # the stand-in stamps its answers with time.monotonic()
        await self._feed(query_update)
        self.answers = list(telegram.pre_checkout_answers[query_id])
        _, answered = telegram.pre_checkout_times[query_id]
        self.answer_s = None if answered is None else answered - fed
        if self.answers and self.answers[0]["ok"]:
            await self._feed(paid_update)
        await asyncio.gather(*tasks)


def _queued(variant: Variant, user_id: int) -> int:
    """How many of `user_id`'s events hold or wait for their turn in botnodes (this process)."""
    # Private attributes, read on purpose (as `flows.build_botnodes`' probe does): the
    # per-user FIFO in front of the user's Redis lock.
    slot = variant.handles["nodes"]._locks._local._slots.get(user_id)
    return int(slot.users) if slot is not None else 0


def _cuts(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max, in milliseconds."""
    if not values:
        return (float("nan"),) * 3
    if len(values) == 1:
        return (values[0] * 1000,) * 3
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000, max(values) * 1000


async def _one_at_a_time(variant: Variant, users: range) -> list[Customer]:
    customers = [Customer(variant, uid, chatter=0) for uid in users]
    for customer in customers:
        await customer.run()
    return customers


async def measure(variant: Variant, texts: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Warm-up, the idle comparison, then `--users` users at once; every figure, as a dict."""
    await _one_at_a_time(variant, range(WARM_UP_BASE, WARM_UP_BASE + WARM_UP_USERS))
    gc.collect()
    gc.freeze()  # what the running bot does once built (see bench/README.md)
    idle = await _one_at_a_time(variant, range(IDLE_BASE, IDLE_BASE + args.idle_users))

    food_api: CountingFoodAPI = variant.food_api  # type: ignore[assignment]
    telegram = variant.session.telegram
    food_api.orders.clear()
    refunds_before = len(telegram.refunds)
    calls_before = len(telegram.calls)
    users = range(LOAD_BASE, LOAD_BASE + args.users)
    customers = [Customer(variant, uid, args.chatter) for uid in users]
    began = time.perf_counter()
    await asyncio.gather(*(customer.run() for customer in customers))
    wall = time.perf_counter() - began

    catalog = variant.handles["definition"].catalog
    ordered_text = str(catalog.english(texts.payment_ordered()))
    nodes = variant.handles["nodes"]
    on_start = 0
    for uid in users:
        node = await nodes.user(uid).get_node()
        on_start += type(node).__name__ == "Start"
    keys = Counter(key for _, key, _ in food_api.orders)
    expected_keys = {f"{c.user_id}:paid:{c.charge}" for c in customers if c.charge}
    paid = sum(bool(c.answers) and bool(c.answers[0]["ok"]) for c in customers)
    answer_s = [c.answer_s for c in customers if c.answer_s is not None]
    updates = len(users) * (len(CART) + 4 + args.chatter) + paid
    errors = [error for c in customers for error in c.errors]
    return {
        "users": args.users,
        "chatter": args.chatter,
        "queries": len(customers),
        "answered_once": sum(len(c.answers) == 1 for c in customers),
        "answered_ok": paid,
        "queued_when_asked": sum(c.queued_when_asked > 0 for c in customers),
        "mean_queue_when_asked": statistics.fmean([c.queued_when_asked for c in customers]),
        "answer_ms": _cuts(answer_s),
        "within_deadline": sum(s < TELEGRAM_DEADLINE_S for s in answer_s),
        "idle_answer_ms": _cuts([c.answer_s for c in idle if c.answer_s is not None]),
        "idle_answered_ok": sum(bool(c.answers) and bool(c.answers[0]["ok"]) for c in idle),
        "message_ms": _cuts([s for c in customers for s in c.message_s]),
        "payments": paid,
        "orders": len(food_api.orders),
        "distinct_orders": len(keys),
        "orders_of_the_charges": len(expected_keys & set(keys)),
        "orders_with_payment": sum(payment is not None for _, _, payment in food_api.orders),
        "refunds": len(telegram.refunds) - refunds_before,
        "told_ordered_once": sum(
            telegram.texts.get(uid, []).count(ordered_text) == 1 for uid in users
        ),
        "back_on_start": on_start,
        "updates": updates,
        "updates_per_s": updates / wall,
        "bot_api_calls": len(telegram.calls) - calls_before,
        "wall_s": wall,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def _ms(cuts: tuple[float, float, float]) -> str:
    if any(value != value for value in cuts):  # NaN: nothing measured (e.g. --chatter 0)
        return "n/a"
    return " / ".join(f"{value:,.2f}" for value in cuts)


def problems(result: dict[str, Any]) -> list[str]:
    """What is wrong with the run's correctness figures (empty: nothing)."""
    n = result["users"]
    found = []
    for figure in ("answered_once", "answered_ok", "payments", "orders", "distinct_orders"):
        if result[figure] != n:
            found.append(f"{figure} {result[figure]} of {n}")
    for figure in ("orders_of_the_charges", "orders_with_payment", "told_ordered_once"):
        if result[figure] != n:
            found.append(f"{figure} {result[figure]} of {n}")
    if result["back_on_start"] != n:
        found.append(f"back_on_start {result['back_on_start']} of {n}")
    if result["refunds"]:
        found.append(f"refunds {result['refunds']}")
    if result["within_deadline"] != n:
        found.append(f"answered within Telegram's 10 s: {result['within_deadline']} of {n}")
    if result["errors"]:
        found.append(f"{result['errors']} errors, first: {result['first_error']}")
    return found


def render(result: dict[str, Any], meta: dict[str, str]) -> str:
    n, chatter = result["users"], result["chatter"]
    answer, idle, message = result["answer_ms"], result["idle_answer_ms"], result["message_ms"]
    r = result
    rows = [
        ("users in flight", f"{n:,}"),
        ("pre-checkout queries answered once / ok", f"{r['answered_once']} / {r['answered_ok']}"),
        (
            "queries fed while the user's own messages were queued in botnodes (mean queue)",
            f"{r['queued_when_asked']} ({r['mean_queue_when_asked']:.1f})",
        ),
        ("**pre-checkout answer time p50 / p99 / max (ms)**", f"**{_ms(answer)}**"),
        ("the same, one user at a time on an idle bot, p50 / p99 / max (ms)", _ms(idle)),
        ("an ordinary message of the same users meanwhile, p50 / p99 / max (ms)", _ms(message)),
        ("answered within Telegram's 10 s", f"{r['within_deadline']}"),
        (
            "payments / orders placed / distinct orders",
            f"{r['payments']} / {r['orders']} / {r['distinct_orders']}",
        ),
        (
            "orders under their charge's idempotency key / with the payment",
            f"{r['orders_of_the_charges']} / {r['orders_with_payment']}",
        ),
        ("refunds", f"{r['refunds']}"),
        ("users told their paid order was placed, once", f"{r['told_ordered_once']}"),
        ("users back on Start", f"{r['back_on_start']}"),
        ("updates / updates/s during the load", f"{r['updates']:,} / {r['updates_per_s']:,.0f}"),
    ]
    lines = [
        f"## Payments: pre-checkout answer time, {n:,} users in flight (PAYMENTS=stars)",
        "",
        f"Machine: {meta['machine']}",
        f"Versions: {meta['versions']}",
        f"Date: {meta['date']}",
        f"Load: {n:,} users at once, each: hi, Yes, {len(CART)} items, Finish (priced, invoiced),"
        f" then {chatter} ordinary messages and the pre-checkout query at once, then the payment;"
        f" {result['updates']:,} updates in {result['wall_s']:.1f} s",
        "",
        "| figure | value |",
        "|---|---:|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
    ]
    if answer[1] == answer[1] and idle[0] > 0 and idle[1] > 0 and message[1] > 0:  # not NaN
        lines += [
            f"- pre-checkout under load / idle: p50 {answer[0] / idle[0]:.0f}x,"
            f" p99 {answer[1] / idle[1]:.0f}x",
            f"- pre-checkout p99 / ordinary message p99, same load: {answer[1] / message[1]:.2f}",
            f"- worst answer / Telegram's 10 s: {answer[2] / (TELEGRAM_DEADLINE_S * 1000):.3f}",
        ]
    found = problems(result)
    if found:
        lines += ["", "PROBLEMS: " + "; ".join(found)]
    return "\n".join(lines)


async def run(args: argparse.Namespace, project: Path, redis_url: str) -> dict[str, Any]:
    package = next(p.parent.name for p in project.glob("*/__main__.py"))
    sys.path.insert(0, str(project))
    flows.load_fake_bot_api(str(fake_bot_api(project)))
    redis = create_client(redis_url, max_connections=max(args.users, 10))
    prefix = f"bench-payments-{os.getpid()}-{int(time.time())}"
    variant, texts = build_paying_bot(redis, prefix, package)
    try:
        return await measure(variant, texts, args)
    finally:
        await variant.close()
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the bot's warnings would drown the report
    with tempfile.TemporaryDirectory(prefix="bench-payments-") as tmp:
        project = bake(args.template, Path(tmp))
        if args.redis_url:
            result = asyncio.run(run(args, project, args.redis_url))
        else:
            with redis_server(args.redis_server, Path(tmp)) as url:
                result = asyncio.run(run(args, project, url))
    meta = {
        "machine": machine(),
        "versions": versions(args.redis_server),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    print(render(result, meta))
    return 1 if problems(result) else 0


if __name__ == "__main__":
    sys.exit(main())
