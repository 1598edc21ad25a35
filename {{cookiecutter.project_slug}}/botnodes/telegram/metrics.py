"""Prometheus metrics of one bot process, and the small server that exposes them.

Labels are small fixed sets (update types, outcomes, node keys, Bot API methods): never a
user id or a text, which would make one time series per user.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import TelegramObject, Update
from aiogram.types.update import UpdateTypeLookupError
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from botnodes import NodesObserver

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: A due timer should fire within a second; a claim that expired makes it ~30 s late.
_LATENESS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class BotMetrics(NodesObserver):
    """Every metric of the bot, in a registry of its own (tests can build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.updates = Counter(
            "bot_updates_total",
            "Updates handled, by type and outcome (handled, unhandled, error).",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.transitions = Counter(
            "bot_transitions_total",
            "Transitions stored by botnodes, by the node left and the node entered.",
            ["from_node", "to_node"],
            registry=self.registry,
        )
        self.route_seconds = Histogram(
            "bot_route_seconds",
            "Time botnodes took for one event, lock and replies included.",
            buckets=_FAST,
            registry=self.registry,
        )
        self.lock_wait_seconds = Histogram(
            "bot_lock_wait_seconds",
            "Time an event waited for its user's lock.",
            buckets=_FAST,
            registry=self.registry,
        )
        self.resets = Counter(
            "bot_state_resets_total",
            "Users put back on the start node because their stored state was unreadable.",
            registry=self.registry,
        )
        self.node_errors = Counter(
            "bot_node_errors_total",
            "Exceptions raised by a node's on_event or on_enter.",
            ["node", "hook"],
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "bot_redis_errors_total", "Redis calls that failed.", registry=self.registry
        )
        self.duplicates = Counter(
            "bot_duplicate_updates_total",
            "Updates handled before that arrived again (Telegram re-deliveries), skipped.",
            registry=self.registry,
        )
        self.timers = Counter(
            "bot_timers_total",
            "Node timers by what happened to them (scheduled, fired, cancelled) and name.",
            ["node", "timer", "event"],
            registry=self.registry,
        )
        self.timer_lateness_seconds = Histogram(
            "bot_timer_lateness_seconds",
            "How long after its due time a timer fired.",
            buckets=_LATENESS,
            registry=self.registry,
        )
        self.telegram_retries = Counter(
            "bot_telegram_retries_total",
            "Bot API calls retried, by method and reason (429, server, network).",
            ["method", "reason"],
            registry=self.registry,
        )
        self.telegram_wait_seconds = Counter(
            "bot_telegram_retry_wait_seconds_total",
            "Seconds spent waiting before Bot API retries (429 flood control included).",
            ["reason"],
            registry=self.registry,
        )
        self.send_limit_waits = Counter(
            "bot_send_limit_waits_total",
            "Messages that waited for their turn in a shared send budget (chat, group, bulk).",
            ["budget"],
            registry=self.registry,
        )
        self.send_limit_wait_seconds = Counter(
            "bot_send_limit_wait_seconds_total",
            "Seconds messages waited for their turn in a shared send budget.",
            ["budget"],
            registry=self.registry,
        )
        self.broadcast_messages = Counter(
            "bot_broadcast_messages_total",
            "Broadcast messages by outcome (sent, blocked: skipped, failed, unconfirmed).",
            ["outcome"],
            registry=self.registry,
        )

        self.deliveries_in_flight = Gauge(
            "bot_webhook_deliveries_in_flight",
            "Webhook deliveries taken and not answered yet (at most MAX_PENDING_UPDATES).",
            registry=self.registry,
        )
        self.deliveries_refused = Counter(
            "bot_webhook_deliveries_refused_total",
            "Webhook deliveries answered without handling them, by status and reason.",
            ["status", "reason"],
            registry=self.registry,
        )

    # NodesObserver: what botnodes reports.
    def transition(
        self, from_node: str | None, to_node: str, duration: float, lock_wait: float
    ) -> None:
        self.transitions.labels(from_node or "(new)", to_node).inc()
        self.route_seconds.observe(duration)
        self.lock_wait_seconds.observe(lock_wait)

    def reset(self, reason: str) -> None:
        self.resets.inc()

    def node_failed(self, node: str, hook: str) -> None:
        self.node_errors.labels(node, hook).inc()

    def redis_error(self) -> None:
        self.redis_errors.inc()

    def duplicate(self) -> None:
        self.duplicates.inc()

    def timer_scheduled(self, node: str, name: str) -> None:
        self.timers.labels(node, name, "scheduled").inc()

    def timer_cancelled(self, node: str, name: str) -> None:
        self.timers.labels(node, name, "cancelled").inc()

    def timer_fired(self, node: str, name: str, lateness: float) -> None:
        self.timers.labels(node, name, "fired").inc()
        self.timer_lateness_seconds.observe(lateness)

    # telegram_limits.RetryTelegram's hook.
    def telegram_retry(self, method: str, reason: str, delay: float) -> None:
        self.telegram_retries.labels(method, reason).inc()
        self.telegram_wait_seconds.labels(reason).inc(delay)

    # send_limits.SendLimiter's hook.
    def send_limit_wait(self, budget: str, seconds: float) -> None:
        self.send_limit_waits.labels(budget).inc()
        self.send_limit_wait_seconds.labels(budget).inc(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class CountUpdates(BaseMiddleware):
    """Counts every update by its type and what became of it."""

    def __init__(self, metrics: BotMetrics) -> None:
        self._metrics = metrics

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        try:
            kind = event.event_type if isinstance(event, Update) else type(event).__name__
        except UpdateTypeLookupError:
            # A type newer than this aiogram: no handler could take it, so skip it (answered
            # 200 in webhook mode: Telegram must not deliver it again).
            self._metrics.updates.labels("unknown", "skipped").inc()
            return UNHANDLED
        outcome = "error"
        try:
            result = await handler(event, data)
            outcome = "unhandled" if result is UNHANDLED else "handled"
            return result
        finally:
            self._metrics.updates.labels(kind, outcome).inc()


def metrics_route(metrics: BotMetrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler serving the metrics in Prometheus' text format."""

    async def serve(request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return serve
