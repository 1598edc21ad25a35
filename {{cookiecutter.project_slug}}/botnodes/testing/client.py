"""`BotTestClient`: talk to the real bot in a test, as users do, without Telegram.

It wires the bot exactly as `python -m <package>` does (the same `create_nodes`,
`build_dispatcher`, routers, middlewares, nodes and botnodes on a real Redis) with the Bot API
replaced by `FakeTelegram`, then feeds it updates (`BOT` is the bot's `BotDefinition`):

    async with BotTestClient.start(BOT, settings) as client:
        alice = client.user(5001, username="alice")
        assert [r.text for r in await alice.send("hi")] == ["Hello, alice! Are you hungry?"]
        replies = await alice.click("Yes")          # presses a button of the last message
        assert isinstance(await alice.node(), Hungry)
        await client.advance(minutes=30)            # fires the timers that fall due
        payment = await alice.pay()                 # pays the last invoice (PAYMENTS on)

Every reply is checked against Telegram's rules on the way out, so a message too long for
Telegram fails the test the way it would fail in production.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.types import Update

from botnodes import Node, Nodes

from ..telegram.app import add_telegram_rules, create_languages, create_limiter, create_nodes
from ..telegram.context import BotContext
from ..telegram.definition import BotDefinition
from ..telegram.dispatcher import build_dispatcher
from ..telegram.i18n import Text
from ..telegram.recipients import Recipients, watch_users
from ..telegram.redis_connection import RedisClient, create_redis
from ..telegram.send_limits import CountStepReplies
from ..telegram.settings import BotSettings
from .fake_bot_api import FakeSession, FakeTelegram, message_update, unique_ids

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """A message the bot sent: its text and the labels of its buttons, row by row."""

    text: str
    buttons: list[list[str]] = field(default_factory=list)
    #: Telegram's id of the message (0 when made by hand); not compared, so tests can write
    #: `Reply("text")` and still compare equal to what was sent.
    message_id: int = field(default=0, compare=False)

    @classmethod
    def of(cls, message: dict[str, Any]) -> Reply:
        rows = message.get("reply_markup", {}).get("inline_keyboard", [])
        buttons = [[str(key["text"]) for key in row] for row in rows]
        if "invoice" in message:  # shown as `Invoice: <title> (<total> <currency>)`
            invoice = message["invoice"]
            text = f"Invoice: {invoice['title']} ({invoice['total_amount']} {invoice['currency']})"
            return cls(text, buttons, int(message["message_id"]))
        return cls(str(message["text"]), buttons, int(message["message_id"]))


@dataclass(frozen=True)
class Payment:
    """What came of `TestUser.pay()`: the pre-checkout answer, and the payment if it went on."""

    ok: bool
    #: The reason the bot gave for refusing at pre-checkout (None when ok).
    error: str | None
    #: The replies to the user from the payment (none when refused at pre-checkout).
    replies: list[Reply]
    #: Telegram's charge id (made even when refused, never paid then).
    charge_id: str
    #: The `successful_payment` update, to deliver it again (`client.feed(payment.update)`).
    update: dict[str, Any]
    #: Seconds from the pre-checkout query to its answer.
    answered_in: float


class TestClock:
    """The time as the bot under test sees it: the real time at start, then moved by hand."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class BotTestClient:
    """The bot, in process, with a fake Telegram; `user()` gives a handle to talk as someone."""

    def __init__(
        self,
        definition: BotDefinition[Any, Any],
        *,
        dispatcher: Dispatcher,
        bot: Bot,
        nodes: Nodes[Any, Any, int],
        ctx: BotContext,
        telegram: FakeTelegram,
        clock: TestClock | None = None,
    ) -> None:
        self.definition = definition
        #: The nodes' context, as they see it.
        self.ctx = ctx
        self.dispatcher = dispatcher
        self.bot = bot
        self.nodes = nodes
        self.telegram = telegram
        self.clock = clock or TestClock()
        self._update_ids = unique_ids()

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        definition: BotDefinition[Any, Any],
        settings: BotSettings,
        *,
        redis: RedisClient | None = None,
        telegram: FakeTelegram | None = None,
        strict_transitions: bool = True,
        send_limits: bool = False,
        **ctx_changes: Any,
    ) -> AsyncIterator[BotTestClient]:
        """Build the bot `definition` from `settings` (Redis from `settings.redis` unless given).

        `ctx_changes` replace fields of the bot's context: `food_api=recording_api` puts a
        test's stand-in where the bot's own service would be.

        `send_limits` makes replies wait for their turn in the shared send budgets, as the
        running bot does with SEND_LIMITS on; off by default, so a test's user can type
        faster than Telegram lets a bot answer.

        A node returning a node its `on_event` annotation does not declare raises
        `UndeclaredTransitionError` here (`strict_transitions`); the running bot only logs it.
        """
        telegram = telegram or FakeTelegram()
        own_redis = redis is None
        client_redis = create_redis(settings.redis) if redis is None else redis
        limiter = create_limiter(settings, client_redis) if send_limits else None
        session = FakeSession(telegram)
        # The same limits and retries as live.
        add_telegram_rules(session, settings.telegram, limiter=limiter)
        bot = Bot(settings.telegram.bot_token.get_secret_value(), session=session)
        languages = create_languages(definition, settings, client_redis)
        built: BotContext = definition.create_ctx(bot, languages, settings)
        ctx = dataclasses.replace(built, **ctx_changes) if ctx_changes else built
        clock = TestClock()
        nodes = create_nodes(
            definition,
            settings,
            client_redis,
            ctx,
            strict_transitions=strict_transitions,
            clock=clock,
            limiter=limiter,
        )
        try:
            dispatcher = build_dispatcher(definition.build_routers(nodes), nodes, languages)
            recipients = Recipients(client_redis, settings.state.state_key)
            recipients.batch_with(nodes.run_script)  # as `App` does
            watch_users(dispatcher, recipients)
            if limiter is not None:
                dispatcher.update.outer_middleware(CountStepReplies())
            yield cls(
                definition,
                dispatcher=dispatcher,
                bot=bot,
                nodes=nodes,
                ctx=ctx,
                telegram=telegram,
                clock=clock,
            )
        finally:
            await ctx.aclose()
            if ctx is not built:
                await built.aclose()
            if own_redis:
                await client_redis.aclose()

    def user(
        self,
        user_id: int,
        *,
        username: str | None = "alice",
        first_name: str = "Alice",
        last_name: str | None = None,
        language_code: str | None = None,
    ) -> TestUser:
        """A Telegram user chatting with the bot in a private chat.

        `language_code` is what Telegram reports for them (`ru`, `ru-RU`...; None: nothing).
        """
        return TestUser(self, user_id, username, first_name, last_name, language_code=language_code)

    async def advance(self, delta: timedelta | None = None, **parts: float) -> int:
        """Let time pass (`advance(minutes=30)`, or a timedelta): fire every timer due by then.

        Nothing sleeps: the bot's clock moves and the due timers run in order of their due
        times, as the running bot would fire them. Returns how many users' timers were looked at.
        """
        self.clock.now += (delta or timedelta(**parts)).total_seconds()
        looked = 0
        while handled := await self.nodes.fire_due():
            looked += handled
        return looked

    def english(self, text: Text) -> str:
        """`text` as an English-speaking user reads it: `client.english(TEXTS.start_yes())`."""
        return str(self.definition.catalog.english(text))

    def next_update_id(self) -> int:
        return next(self._update_ids)

    async def feed(self, update: dict[str, Any]) -> None:
        """Run one raw Bot API update through the dispatcher, as polling would."""
        await self.dispatcher.feed_update(
            self.bot, Update.model_validate(update, context={"bot": self.bot})
        )


class TestUser:
    """One user of a `BotTestClient`: send text, press buttons, look at their node."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        client: BotTestClient,
        user_id: int,
        username: str | None,
        first_name: str,
        last_name: str | None,
        *,
        language_code: str | None = None,
    ) -> None:
        self.client = client
        self.user_id = user_id
        self._fields: dict[str, Any] = {
            "username": username,
            "first_name": first_name,
            "last_name": last_name,
            "language_code": language_code,
        }
        #: The text the bot answered the last press with (None: answered without text).
        self.last_answer: str | None = None

    async def send(self, text: str | None) -> list[Reply]:
        """Send a private message (`None`: a location, i.e. not text); return the replies."""
        update = message_update(self.client.next_update_id(), self.user_id, text, **self._fields)
        return await self._replies_to(update)

    async def click(self, button: str, on: Reply | None = None) -> list[Reply]:
        """Press the button labelled `button` on the newest message showing it (or on the
        message `on`, e.g. an older one, whose press is out of date); the replies.

        Raises LookupError naming the buttons shown if no message to this user has it.
        """
        telegram = self.client.telegram
        update = telegram.press_update(
            self.client.next_update_id(),
            self.user_id,
            button,
            message_id=None if on is None else on.message_id,
            **self._fields,
        )
        query_id = update["callback_query"]["id"]
        replies = await self._replies_to(update)
        answers = telegram.answers[query_id]
        if len(answers) != 1:  # Telegram refuses a second answer; none leaves a spinner
            raise AssertionError(f"the press of {button!r} was answered {len(answers)} times")
        self.last_answer = answers[0].get("text")
        return replies

    async def to(self, node: Node[Any, Any, int, Any]) -> None:
        """Put the user on `node` (its `on_enter` replies), as if a node had returned it.

        Unlike `client.nodes.user(id).to(node)`, which knows only what an update told the bot,
        this first notes the language Telegram reports for the user, so replies are in it.
        """
        await self.client.ctx.languages.learn(self.user_id, self._fields["language_code"])
        await self.client.nodes.user(self.user_id).to(node)

    async def node(self) -> Node[Any, Any, int, Any] | None:
        """The node the user is on (with its data in `._data`), as botnodes stored it."""
        return await self.client.nodes.user(self.user_id).get_node()

    async def pay(
        self,
        *,
        currency: str | None = None,
        total_amount: int | None = None,
        payload: str | None = None,
        invoice: Reply | None = None,
    ) -> Payment:
        """Pay the newest invoice (or `invoice`) as Telegram does: a `pre_checkout_query`
        first, then, if the bot answered it ok, a `successful_payment` message.

        `currency`, `total_amount` and `payload` change what the query claims, as a forged or
        tampered payment would. The food API's answer is the test's stand-in's (make it refuse
        there). Fails the test if the query is not answered exactly once.
        """
        telegram = self.client.telegram
        if invoice is None:
            _, params = telegram.last_invoice(self.user_id)
        else:
            params = telegram.invoices[invoice.message_id]
        ids = (self.client.next_update_id(), self.client.next_update_id())
        query, paid = telegram.pay_updates(
            ids,
            self.user_id,
            params,
            currency=currency,
            total_amount=total_amount,
            payload=payload,
            **self._fields,
        )
        query_id = query["pre_checkout_query"]["id"]
        before = len(self.client.telegram.delivered(self.user_id))
        await self.client.feed(query)
        answers = telegram.pre_checkout_answers[query_id]
        if len(answers) != 1:
            raise AssertionError(f"the pre-checkout query was answered {len(answers)} times")
        asked, answered = telegram.pre_checkout_times[query_id]
        ok = bool(answers[0]["ok"])
        if ok:
            await self.client.feed(paid)
        return Payment(
            ok=ok,
            error=None if ok else str(answers[0].get("error_message")),
            replies=self.replies()[before:],
            charge_id=str(paid["message"]["successful_payment"]["telegram_payment_charge_id"]),
            update=paid,
            answered_in=(answered or asked) - asked,
        )

    def replies(self) -> list[Reply]:
        """Every message the bot sent this user so far."""
        return [Reply.of(message) for message in self.client.telegram.delivered(self.user_id)]

    async def _replies_to(self, update: dict[str, Any]) -> list[Reply]:
        before = len(self.client.telegram.delivered(self.user_id))
        await self.client.feed(update)
        return self.replies()[before:]
