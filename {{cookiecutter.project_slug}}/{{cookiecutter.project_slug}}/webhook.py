"""Webhook mode: Telegram POSTs updates to this process; run as many replicas as you like.

botnodes' per-user Redis lock keeps one user's updates in order even when they reach
different replicas at once. The server also answers `/healthz` (the process is up),
`/readyz` (Redis answers and the webhook is set) and `/metrics` (Prometheus).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from urllib.parse import urlsplit

from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from .main import App
from .metrics import metrics_route

logger = logging.getLogger(__name__)

#: Seconds `/readyz` gives Redis to answer PING.
READY_TIMEOUT = 2.0


class WebhookServer:
    """The aiohttp server of one replica, and its orderly start and stop."""

    def __init__(self, app: App) -> None:
        settings = app.settings.webhook
        if settings.url is None or settings.secret is None:
            raise ValueError("webhook mode needs WEBHOOK_URL and WEBHOOK_SECRET")
        self.app = app
        self.url = str(settings.url)
        self.secret = settings.secret.get_secret_value()
        self.ready = False
        # Updates are handled in the background: Telegram gets its 200 at once, replies go out
        # as Bot API calls. A wrong or missing secret header is answered 401 before any handler.
        self.updates = SimpleRequestHandler(
            app.dispatcher, app.bot, secret_token=self.secret, handle_in_background=True
        )
        self.web = web.Application()
        self.web.router.add_post(urlsplit(self.url).path or "/", self.updates.handle)
        self.web.router.add_get("/healthz", self.healthz)
        self.web.router.add_get("/readyz", self.readyz)
        self.web.router.add_get("/metrics", metrics_route(app.metrics))
        self.runner = web.AppRunner(self.web, handle_signals=False)
        self.site: web.TCPSite | None = None

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.Response:
        redis_ok = False
        with contextlib.suppress(Exception):
            async with asyncio.timeout(READY_TIMEOUT):
                redis_ok = bool(await self.app.redis.ping())
        if self.ready and redis_ok:
            return web.Response(text="ready")
        reason = "Redis does not answer" if self.ready else "not set up yet"
        return web.Response(status=503, text=f"not ready: {reason}")

    async def start(self) -> None:
        """Check the token, listen, then tell Telegram where to post."""
        await self.app.bot.get_me()  # a wrong token fails here, in one line (see __main__)
        await self.runner.setup()
        settings = self.app.settings.webhook
        self.site = web.TCPSite(self.runner, settings.host, settings.port)
        await self.site.start()
        await self.app.bot.set_webhook(
            self.url,
            secret_token=self.secret,
            allowed_updates=self.app.dispatcher.resolve_used_update_types(),
        )
        self.ready = True
        self.app.start_timers()
        logger.info("Serving webhooks on %s:%s", settings.host, settings.port)

    async def stop(self) -> None:
        """Stop taking updates, let the ones in flight finish (bounded), then close."""
        self.ready = False
        if self.site is not None:
            await self.site.stop()
        pending = set(self.updates._background_feed_update_tasks)  # started, not finished
        if pending:
            await asyncio.wait(pending, timeout=self.app.settings.runtime.shutdown_timeout)
        await self.app.on_shutdown()
        await self.app.bot.session.close()
        await self.runner.cleanup()


async def run_webhook(app: App) -> None:
    """Serve webhooks until SIGTERM/SIGINT, then stop in order and return (exit 0)."""
    server = WebhookServer(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        await stop.wait()
    finally:
        await server.stop()
