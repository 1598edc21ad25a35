"""`FakeBotAPIServer`: `FakeTelegram` over HTTP, for a bot process started with TELEGRAM_API_URL.

It serves the long-polling `getUpdates` that `push_message` and `push_press` feed, and waits
for the bot's answers (`say`, `press`) on the same condition the calls notify.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from .calls import ApiCall, Dropped, Params, Refusal, UnknownMethodError, unique_ids
from .fake_telegram import FakeTelegram
from .updates import message_update


class FakeBotAPIServer:
    """The fake Bot API over HTTP on 127.0.0.1, for a bot started with TELEGRAM_API_URL."""

    def __init__(self, token: str, host: str = "127.0.0.1") -> None:
        self.token = token
        self.host = host
        self.telegram = FakeTelegram()
        self._updates: list[dict[str, Any]] = []
        self._update_ids = unique_ids()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.port = 0
        #: Most updates one getUpdates call returns (Telegram's `limit`); lower it to make
        #: several polling processes share a burst.
        self.batch_size = 100

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/bot{token}/{method}", self._handle)
        app.router.add_route("GET", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        # Wake long-polling getUpdates calls so shutdown does not wait out their timeout.
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    def next_update_id(self) -> int:
        return next(self._update_ids)

    async def push_update(self, update: dict[str, Any]) -> int:
        """Queue an update for the next getUpdates; returns its update_id."""
        async with self._changed:
            self._updates.append(update)
            self._changed.notify_all()
        return int(update["update_id"])

    async def push_message(self, user_id: int, text: str | None, **fields: Any) -> int:
        """Queue a message from `user_id` for the next getUpdates; returns its update_id."""
        return await self.push_update(
            message_update(self.next_update_id(), user_id, text, **fields)
        )

    async def push_press(self, user_id: int, button: str, **fields: Any) -> int:
        """Queue a press of the button `button` on the newest message to `user_id` showing it."""
        update = self.telegram.press_update(self.next_update_id(), user_id, button, **fields)
        return await self.push_update(update)

    def sent_texts(self, chat_id: int | None = None) -> list[str]:
        return self.telegram.sent_texts(chat_id)

    def calls(self, method: str) -> list[ApiCall]:
        return self.telegram.attempts(method)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until `predicate()` holds; fail the test with `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    continue

    async def wait_polling(self, timeout: float = 20.0, *, since: int = 0) -> None:
        """Wait until a bot asks for updates, i.e. it started and is ready.

        `since`: how many getUpdates calls there were before it started (earlier bots').
        """
        await self.wait_for(lambda: len(self.calls("getUpdates")) > since, timeout, "getUpdates")

    async def say(
        self, user_id: int, text: str | None, expect: int, timeout: float = 15.0, **fields: Any
    ) -> list[str]:
        """Send a message and return the next `expect` texts the bot sends to this user."""
        before = len(self.sent_texts(user_id))
        await self.push_message(user_id, text, **fields)
        return await self._replies(user_id, before, expect, timeout, repr(text))

    async def press(
        self, user_id: int, button: str, expect: int, timeout: float = 15.0, **fields: Any
    ) -> list[str]:
        """Press a button and return the next `expect` texts the bot sends to this user."""
        before = len(self.sent_texts(user_id))
        await self.push_press(user_id, button, **fields)
        return await self._replies(user_id, before, expect, timeout, f"the {button!r} button")

    async def _replies(
        self, user_id: int, before: int, expect: int, timeout: float, what: str
    ) -> list[str]:
        await self.wait_for(
            lambda: len(self.sent_texts(user_id)) >= before + expect,
            timeout,
            f"{expect} answer(s) to {what}",
        )
        return self.sent_texts(user_id)[before:]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        params = await self._params(request)
        latency = self.telegram.latency
        if latency is None or method == "getUpdates":
            return await self._answer(request, method, params)
        await latency.trip()  # the way to Telegram
        response = await self._answer(request, method, params)
        await latency.trip()  # and the answer's way back
        return response

    async def _answer(
        self, request: web.Request, method: str, params: Params
    ) -> web.StreamResponse:
        if method == "getUpdates":
            async with self._changed:
                self.telegram.calls.append(ApiCall(method, params))
                self._changed.notify_all()
            updates = await self._get_updates(params, request)
            return web.json_response({"ok": True, "result": updates})
        async with self._changed:
            try:
                result = self.telegram.answer(method, params)
            except UnknownMethodError:
                return web.json_response(
                    {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
                )
            except Refusal as refusal:
                self._changed.notify_all()
                if refusal.raw is not None:
                    return web.Response(status=refusal.status, text=refusal.raw)
                return web.json_response(refusal.body(), status=refusal.status)
            except Dropped:
                self._changed.notify_all()
                if request.transport is not None:
                    request.transport.abort()  # the client sees the connection reset
                return web.Response(status=500)
            self._changed.notify_all()
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    async def _params(request: web.Request) -> Params:
        if request.content_type == "application/json":
            body = await request.json()
            return dict(body)
        form = await request.post()
        return {key: str(value) for key, value in form.items()}

    async def _get_updates(
        self, params: Mapping[str, Any], request: web.Request
    ) -> list[dict[str, Any]]:
        offset = int(params.get("offset", 0))
        timeout = float(params.get("timeout", 0))
        deadline = time.monotonic() + timeout
        async with self._changed:
            # Updates below the offset are confirmed: Telegram never sends them again.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self._closing and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())
                except TimeoutError:
                    break
            if request.transport is None or request.transport.is_closing():
                return []  # the poller is gone (killed): like Telegram, keep its updates
            batch = self._updates[: min(int(params.get("limit", 100)), self.batch_size)]
            # Hand each update to one poller only, so several bot processes can share a server.
            self._updates = self._updates[len(batch) :]
            return batch
