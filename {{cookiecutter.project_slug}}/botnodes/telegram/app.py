"""`App`: one bot process, built from a `BotDefinition` and its settings, with an orderly stop.

It wires settings, Redis, the Bot, botnodes, metrics and the routers together; polling, the
webhook server, broadcast and the health check all start from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Generic
from urllib.parse import urlsplit

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import PRODUCTION, TelegramAPIServer
from aiogram.exceptions import TelegramAPIError
from redis.exceptions import RedisError

from botnodes import Nodes, NodesObserver, NodesSettings

from .definition import BotDefinition, CtxT, SettingsT
from .dispatcher import build_dispatcher
from .events import Event, UserId, event_id, event_to_user_id, event_visit
from .invoices import PaymentSettings
from .language import Languages
from .metrics import BotMetrics, CountUpdates
from .middlewares import InFlightUpdates
from .recipients import Recipients, watch_users
from .redis_connection import RedisClient, create_redis
from .send_limits import CountStepReplies, KeepSendRate, SendLimiter, StepTurns
from .settings import BotSettings, TelegramSettings
from .telegram_limits import KeepWithinLimits, RetryHook, RetryTelegram
from .update_order import arrival_order

logger = logging.getLogger(__name__)

#: Field botnodes stores each node's key in; no node model may have a field of this name.
DISCRIMINATOR_FIELD = "node_name"


class StartupError(Exception):
    """The bot can't start (Bot API, Redis or the listening port); the message is one line."""


def secrets_of(settings: BotSettings) -> list[str]:
    """Values that must never appear in a log line."""
    found = [settings.telegram.bot_token.get_secret_value()]
    password = urlsplit(settings.redis.url.get_secret_value()).password
    if password:
        found.append(password)
    payments = getattr(settings, "payments", None)  # a bot's PaymentSettings, if it has them
    if isinstance(payments, PaymentSettings) and payments.payment_provider_token is not None:
        found.append(payments.payment_provider_token.get_secret_value())
    return found


def bot_api_failure(settings: BotSettings, method: str, exc: TelegramAPIError) -> str:
    """One line naming the Bot API call that failed at start-up, and where it went."""
    api = settings.telegram.telegram_api_url or "Telegram"
    return f"{method} failed at the Bot API ({api}): {exc}"


def create_bot(
    settings: TelegramSettings,
    on_retry: RetryHook | None = None,
    limiter: SendLimiter | None = None,
) -> Bot:
    """A Bot talking to Telegram, or to the self-hosted Bot API server in TELEGRAM_API_URL.

    Its session keeps Telegram's limits and retries what Telegram asks to retry, for every
    call the bot makes (see telegram_limits.py).
    """
    api = PRODUCTION
    if settings.telegram_api_url is not None:
        api = TelegramAPIServer.from_base(str(settings.telegram_api_url))
    session = AiohttpSession(api=api)
    add_telegram_rules(session, settings, on_retry, limiter)
    return Bot(settings.bot_token.get_secret_value(), session=session)


def add_telegram_rules(
    session: BaseSession,
    settings: TelegramSettings,
    on_retry: RetryHook | None = None,
    limiter: SendLimiter | None = None,
) -> None:
    """Install the limits (outer), the shared send rate (each part takes its own turn) and
    the retries (inner: each part is retried on its own, without taking a second turn)."""
    session.middleware(KeepWithinLimits())
    if limiter is not None:
        session.middleware(KeepSendRate(limiter))
    session.middleware(
        RetryTelegram(
            settings.telegram_max_retries,
            settings.telegram_max_retry_wait,
            on_retry,
            call_timeout=settings.telegram_call_timeout,
        )
    )


def create_languages(
    definition: BotDefinition[Any, Any], settings: BotSettings, redis: RedisClient
) -> Languages:
    """Users' languages, kept next to their state (`create_nodes` batches the reads with it)."""
    return Languages(
        definition.catalog,
        settings.language.default_language,
        redis=redis,
        key_prefix=settings.state.state_key,
    )


def create_limiter(
    settings: BotSettings, redis: RedisClient, metrics: BotMetrics | None = None
) -> SendLimiter | None:
    """The shared send budgets in Redis, or None with SEND_LIMITS=false."""
    if not settings.send_limits.send_limits:
        return None
    on_wait = metrics.send_limit_wait if metrics is not None else None
    return SendLimiter(redis, settings.state.state_key, settings.send_limits, on_wait)


def create_nodes(
    definition: BotDefinition[CtxT, Any],
    settings: BotSettings,
    redis: RedisClient,
    ctx: CtxT,
    *,
    strict_transitions: bool = False,
    observer: NodesObserver | None = None,
    clock: Callable[[], float] = time.time,
    limiter: SendLimiter | None = None,
) -> Nodes[CtxT, Event, UserId]:
    """The botnodes manager for this bot's nodes, with the state settings applied.

    The flow the nodes declare is checked here (see botnodes/graph.py); `strict_transitions`
    (the tests' and the chat's choice) makes an undeclared transition an error, not a warning.
    `clock` is what timers count with: the test client and the chat move their own.
    With the shared send `limiter`, a step's replies take their turns in the commit script.
    """
    nodes: Nodes[CtxT, Event, UserId] = Nodes(
        redis_client=redis,
        redis_property_name=settings.state.state_key,
        nodes_dict=definition.nodes_dict,
        discriminator_field=DISCRIMINATOR_FIELD,
        get_start_node=definition.get_start_node,
        ctx=ctx,
        event_to_user_id=event_to_user_id,
        # A press carries the node visit its button was shown on; an older one is stale.
        event_visit=event_visit,
        # A re-delivered update (same message or query id) is handled once.
        event_id=event_id,
        # Events waiting in different replicas take the user's lock in update_id order.
        arrival_order=arrival_order,
        settings=NodesSettings(
            dedupe_window=settings.state.dedupe_window,
            state_ttl=settings.state.state_ttl,
            lock_ttl=settings.state.lock_ttl,
            lock_wait_timeout=settings.state.lock_wait_timeout,
            state_max_bytes=settings.state.state_max_bytes,
            # Webhook replicas share users: the lock is kept until a step's replies are out,
            # so they stay in order. One polling process keeps that order with its local queue.
            lock_during_replies=settings.webhook.url is not None,
            # Only an update whose user's turn it is takes one of these slots, so one user's
            # backlog can't keep everybody else waiting.
            max_concurrent=settings.runtime.max_concurrent_updates,
            max_waiting_per_user=settings.runtime.max_queued_per_user,
            strict_transitions=strict_transitions,
            # A timer's step waits on Redis as long as a webhook delivery's.
            redis_deadline=settings.webhook.redis_deadline,
        ),
        start_node=definition.start_node,
        observer=observer,
        clock=clock,
        reply_budget=StepTurns(limiter) if limiter is not None else None,
    )
    # A user's language is read by the script that takes their lock, with their state (or,
    # for an update outside the nodes, in the same Redis batches): no round trip more.
    ctx.languages.batch_with(nodes.run_script)
    nodes.read_with_lock(ctx.languages.ride)
    return nodes


class App(Generic[CtxT, SettingsT]):
    """Everything one bot process owns, built from settings, with an orderly shutdown."""

    def __init__(self, definition: BotDefinition[CtxT, SettingsT], settings: SettingsT) -> None:
        self.definition = definition
        self.settings = settings
        self.metrics = BotMetrics()
        self.redis: RedisClient = create_redis(settings.redis)
        self.limiter = create_limiter(settings, self.redis, self.metrics)
        self.bot: Bot = create_bot(
            settings.telegram, on_retry=self.metrics.telegram_retry, limiter=self.limiter
        )
        languages = create_languages(definition, settings, self.redis)
        self.ctx: CtxT = definition.create_ctx(self.bot, languages, settings)
        self.nodes = create_nodes(
            definition,
            settings,
            self.redis,
            self.ctx,
            observer=self.metrics,
            limiter=self.limiter,
        )
        self.in_flight = InFlightUpdates()
        self.dispatcher: Dispatcher = build_dispatcher(
            definition.build_routers(self.nodes), self.nodes, languages, self.in_flight
        )
        self.dispatcher.update.outer_middleware(CountUpdates(self.metrics))
        if self.limiter is not None:
            self.dispatcher.update.outer_middleware(CountStepReplies())
        self.recipients = Recipients(self.redis, settings.state.state_key)
        self.recipients.batch_with(self.nodes.run_script)
        watch_users(self.dispatcher, self.recipients)
        self._timers: asyncio.Task[None] | None = None

    def start_timers(self) -> None:
        """Fire the nodes' due timers from now on, in this process as in every replica."""
        self._timers = asyncio.create_task(self.nodes.run_timers(), name="botnodes timers")

    async def stop_timers(self) -> None:
        """Stop claiming due timers; the firings under way go on (see `on_shutdown`)."""
        if self._timers is not None:
            self._timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timers

    async def check_dependencies(self) -> None:
        """Before taking any update: the token works and Redis answers; else `StartupError`.

        Run before polling or serving, so a bot that can't work says so in one line at
        start-up instead of letting its first user find out.
        """
        try:
            await self.bot.get_me()
        except TelegramAPIError as exc:
            raise StartupError(bot_api_failure(self.settings, "getMe", exc)) from None
        redis = urlsplit(self.settings.redis.url.get_secret_value())
        where = redis.path if redis.scheme == "unix" else f"{redis.hostname}:{redis.port or 6379}"
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            raise StartupError(f"Redis at {where} does not answer PING: {exc}") from None

    async def close(self) -> None:
        """Release every connection; for a start-up that failed before any update."""
        await self.bot.session.close()
        await self.ctx.aclose()
        await self.redis.aclose()

    async def on_shutdown(self, within: float | None = None) -> None:
        """Let in-flight updates finish (bounded), then close Redis and the bot's services.

        aiogram calls this after polling stopped and closes the bot session after it, so
        replies sent by the last handlers still go out. `within` is what is left of
        SHUTDOWN_TIMEOUT when the caller has already waited (webhook mode). Timers stop being
        claimed first; firings already claimed get the same deadline as updates.
        """
        await self.stop_timers()
        loop = asyncio.get_running_loop()
        if within is None:
            within = self.settings.runtime.shutdown_timeout
        deadline = loop.time() + within
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self.in_flight.wait_idle()
        # Also covers timer firings and `nodes.user(...).to(...)` calls started outside an
        # update: a stored step's replies go out within SHUTDOWN_TIMEOUT.
        drained = await self.nodes.drain(max(deadline - loop.time(), 0.0))
        if drained and self.in_flight.count == 0:
            logger.info("All in-flight updates finished")
        else:
            logger.warning(
                "Shutdown timeout: %s update(s) and timer(s) still running are abandoned "
                "(a stored step's unsent replies are logged by user; an unstored one runs again)",
                self.in_flight.count + self.nodes.timer_firings,
            )
            # Cut now, while Redis and the log are open: a firing cut before its commit fires
            # again in the next process, one cut after it logs each reply the user lost.
            await self.nodes.abandon_timers()
        await self.ctx.aclose()
        await self.redis.aclose()
