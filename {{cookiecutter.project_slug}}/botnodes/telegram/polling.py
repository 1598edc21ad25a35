"""Long polling: the default runner, one process per bot token (Telegram allows no more)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .app import App
from .metrics import metrics_route


async def run_polling(app: App[Any, Any]) -> None:
    """Poll until SIGTERM/SIGINT; aiogram then runs `App.on_shutdown` and closes the session.

    With METRICS_PORT set, /metrics is served on that port meanwhile.
    """
    app.dispatcher.shutdown.register(app.on_shutdown)
    metrics_runner = await serve_metrics(app) if app.settings.metrics.port else None
    app.start_timers()
    try:
        await app.dispatcher.start_polling(
            app.bot,
            allowed_updates=app.dispatcher.resolve_used_update_types(),
            # Bounds memory; how many run at once is botnodes' `max_concurrent`.
            tasks_concurrency_limit=app.settings.runtime.max_pending_updates,
            handle_signals=True,
            close_bot_session=True,
        )
    finally:
        await app.stop_timers()  # also when polling never started (a wrong token)
        if metrics_runner is not None:
            await metrics_runner.cleanup()


async def serve_metrics(app: App[Any, Any]) -> web.AppRunner:
    server = web.Application()
    server.router.add_get("/metrics", metrics_route(app.metrics))
    runner = web.AppRunner(server, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, app.settings.webhook.host, app.settings.metrics.port).start()
    return runner
