"""Webhook mode: Telegram POSTs updates to this process; run as many replicas as you like.

botnodes' per-user Redis lock keeps one user's updates in order even when they reach
different replicas at once. The server also answers `/healthz` (the process is up),
`/readyz` (Redis answers and the webhook is set) and `/metrics` (Prometheus).

A delivery is answered 200 only after its update was handled: botnodes stored the step and
the replies went out. Telegram delivers again whatever it did not get a 2xx for, so an update
is never lost to a crash, a deploy or a full process: past MAX_PENDING_UPDATES deliveries in
flight, and once SIGTERM came, new ones are answered 503 and come back later (to this replica
or another one); ones still running when SHUTDOWN_TIMEOUT runs out are dropped unanswered.

Nothing hangs while Redis does: a delivery whose step is not stored within
WEBHOOK_REDIS_DEADLINE, while Redis does not answer a PING within READY_TIMEOUT, is answered 503
with Retry-After, at most WEBHOOK_REDIS_DEADLINE + READY_TIMEOUT + CANCEL_GRACE after it came,
and cut (nothing of it was stored); unless its step's write was already sent, in which case it
is left to finish: stored when Redis wakes, its replies go out and the re-delivery is skipped as
handled; not stored, the re-delivery runs it. A delivery waiting behind a user's long paced
replies while Redis answers is not cut; one whose step is stored finishes its replies, and is
answered 200 within the same bound if Redis goes mute after that (its lease is given back
when Redis answers).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import signal
from typing import Any
from urllib.parse import unquote, urlsplit

from aiogram.exceptions import TelegramAPIError
from aiogram.types import Update
from aiohttp import web
from pydantic import ValidationError

from botnodes import watch_stored
from botnodes.redis_watch import (
    CANCEL_GRACE,
    PROBE_TIMEOUT,
    RedisProbe,
    stored_or_cut,
    watch_saving,
)

from .app import App, StartupError, bot_api_failure
from .metrics import metrics_route

logger = logging.getLogger(__name__)

#: Seconds `/readyz` (and a delivery past WEBHOOK_REDIS_DEADLINE) gives Redis to answer PING.
READY_TIMEOUT = PROBE_TIMEOUT

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header's name, not a secret

#: What Telegram is told to come back later with; it retries any delivery that failed.
RETRY_LATER = {"Retry-After": "1"}


class WebhookServer:
    """The aiohttp server of one replica, and its orderly start and stop."""

    def __init__(self, app: App[Any, Any]) -> None:
        settings = app.settings.webhook
        if settings.url is None or settings.secret is None:
            raise ValueError("webhook mode needs WEBHOOK_URL and WEBHOOK_SECRET")
        self.app = app
        self.url = str(settings.url)
        self.secret = settings.secret.get_secret_value().encode()
        self.ready = False
        self.stopping = False
        #: The request tasks of deliveries being handled: each will be answered 200, or not at all.
        self.in_flight: set[asyncio.Task[Any]] = set()
        #: Deliveries answered while their step's write or bookkeeping waits on a mute Redis.
        self.left_to_finish: set[asyncio.Future[Any]] = set()
        self.web = web.Application()
        # Telegram requests the URL's path %-encoded; aiohttp routes on the decoded path.
        self.web.router.add_post(unquote(urlsplit(self.url).path) or "/", self.deliver)
        self.web.router.add_get("/healthz", self.healthz)
        self.web.router.add_get("/readyz", self.readyz)
        self.web.router.add_get("/metrics", metrics_route(app.metrics))
        # aiohttp's keep-alive timer also runs from the moment a connection opens until its
        # request's headers are in: a client trickling headers is closed after it.
        self.runner = web.AppRunner(
            self.web,
            handle_signals=False,
            keepalive_timeout=settings.read_timeout,
            # A body left unread (too slow, or refused) is not waited for: the connection closes.
            lingering_time=0,
            shutdown_timeout=CANCEL_GRACE,
        )
        self.site: web.TCPSite | None = None
        self.redis = RedisProbe(app.redis.ping, READY_TIMEOUT)

    def refuse(self, status: int, reason: str, text: str) -> web.Response:
        self.app.metrics.deliveries_refused.labels(str(status), reason).inc()
        headers = RETRY_LATER if status >= 500 else None
        return web.Response(status=status, text=text, headers=headers)

    async def deliver(self, request: web.Request) -> web.Response:
        """Handle one update and answer 200, or answer why not (Telegram retries a 5xx)."""
        sent = request.headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(sent, self.secret):
            return self.refuse(401, "wrong_secret", "wrong secret token")
        if self.stopping:
            return self.refuse(503, "stopping", "stopping, deliver it again")
        if len(self.in_flight) >= self.app.settings.runtime.max_pending_updates:
            return self.refuse(503, "busy", "busy, deliver it again")
        task = request.task  # aiohttp runs each request in a task of its own
        self.in_flight.add(task)
        self.app.metrics.deliveries_in_flight.inc()
        try:
            return await self.handle(request)
        finally:
            self.in_flight.discard(task)
            self.app.metrics.deliveries_in_flight.dec()

    async def handle(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(self.app.settings.webhook.read_timeout):
                body = await request.read()
        except TimeoutError:
            response = self.refuse(408, "read_timeout", "request body too slow")
            response.force_close()
            return response
        try:
            update = Update.model_validate_json(body, context={"bot": self.app.bot})
        except ValidationError:
            return self.refuse(400, "not_an_update", "the body is not a Telegram Update")
        stored, sent = asyncio.Event(), asyncio.Event()
        # The task copies the context, and with it both events.
        with watch_stored(stored), watch_saving(sent):
            handling = asyncio.ensure_future(self.app.dispatcher.feed_update(self.app.bot, update))
        try:
            if not await stored_or_cut(
                handling,
                stored,
                deadline=self.app.settings.webhook.redis_deadline,
                probe=self.redis,
                grace=CANCEL_GRACE,
                sent=sent,
            ):
                logger.warning(
                    "Redis did not answer for %.1fs: update %s answered 503 (Telegram re-sends)%s",
                    self.app.settings.webhook.redis_deadline,
                    update.update_id,
                    "; its step was sent to be stored, so it finishes if Redis stores it"
                    if sent.is_set()
                    else "",
                )
                if sent.is_set():
                    self.finishing(handling)
                return self.refuse(503, "redis_timeout", "Redis does not answer, deliver it again")
            # Stored: the replies go out (they need no Redis), then the lease is given back.
            # A Redis gone mute since holds only that bookkeeping, and a re-delivery would be
            # skipped as handled: answer 200 in time and let it finish.
            if not await stored_or_cut(
                handling,
                None,
                deadline=self.app.settings.webhook.redis_deadline,
                probe=self.redis,
                sent=stored,
            ):
                logger.warning(
                    "Redis did not answer for %.1fs after update %s was stored: answered 200, "
                    "what is left of it finishes when Redis answers",
                    self.app.settings.webhook.redis_deadline,
                    update.update_id,
                )
                self.finishing(handling)
                return web.json_response({})
            await handling
        finally:
            if handling not in self.left_to_finish:
                handling.cancel()  # only if this request itself was cancelled (shutdown)
        return web.json_response({})

    def finishing(self, handling: asyncio.Future[Any]) -> None:
        """Keep a delivery answered before it ended (its write went out to a mute Redis): it
        ends on its own, counted by the app's in-flight updates (a shutdown waits for it)."""
        self.left_to_finish.add(handling)

        def done(task: asyncio.Future[Any]) -> None:
            self.left_to_finish.discard(task)
            if not task.cancelled() and task.exception() is not None:
                logger.warning(
                    "An update answered while Redis was mute then failed on it (%r)",
                    task.exception(),
                )

        handling.add_done_callback(done)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.Response:
        redis_ok = await self.redis.answers()
        if self.ready and redis_ok:
            return web.Response(text="ready")
        reason = "Redis does not answer" if self.ready else "not set up yet"
        return web.Response(status=503, text=f"not ready: {reason}")

    async def start(self) -> None:
        """Listen, then tell Telegram where to post; `StartupError` in one line if either fails."""
        settings = self.app.settings.webhook
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, settings.host, settings.port)
        try:
            await self.site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on WEBHOOK_HOST {settings.host} WEBHOOK_PORT {settings.port}: "
                f"{os.strerror(exc.errno) if exc.errno else exc}"
            ) from None
        try:
            await self.app.bot.set_webhook(
                self.url,
                secret_token=self.secret.decode(),
                allowed_updates=self.app.dispatcher.resolve_used_update_types(),
            )
        except TelegramAPIError as exc:
            raise StartupError(bot_api_failure(self.app.settings, "setWebhook", exc)) from None
        self.ready = True
        self.app.start_timers()
        logger.info("Serving webhooks on %s:%s", settings.host, settings.port)

    async def stop(self) -> None:
        """Within SHUTDOWN_TIMEOUT: take nothing new, finish what runs, drop the rest unanswered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.app.settings.runtime.shutdown_timeout
        self.ready = False
        self.stopping = True
        await self.app.stop_timers()  # no new firings; those under way finish with the updates
        if self.site is not None:
            await self.site.stop()  # no new connections from here on
        if self.runner.server is not None:
            self.runner.server.pre_shutdown()  # idle keep-alive connections close now
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=deadline - loop.time())
        dropped = [task for task in self.in_flight if not task.done()]
        for task in dropped:
            task.cancel()  # the connection closes without an answer: Telegram delivers again
        if dropped:
            logger.warning(
                "Shutdown timeout: %d delivery(ies) dropped unanswered; Telegram sends them again",
                len(dropped),
            )
            await asyncio.wait(dropped, timeout=CANCEL_GRACE)
        await self.app.on_shutdown(within=max(deadline - loop.time(), 0.0))
        await self.app.bot.session.close()
        await self.runner.cleanup()


async def run_webhook(app: App[Any, Any]) -> None:
    """Serve webhooks until SIGTERM/SIGINT, then stop in order and return (exit 0)."""
    server = WebhookServer(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except StartupError:
        await server.runner.cleanup()
        await app.close()
        raise
    try:
        await stop.wait()
    finally:
        await server.stop()
