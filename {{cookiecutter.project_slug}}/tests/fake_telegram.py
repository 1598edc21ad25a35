"""A fake Telegram Bot API for tests, in-process and over HTTP, plus a bot-process runner.

- `FakeTelegram` answers Bot API methods and records every call.
- `FakeSession` plugs it into an aiogram `Bot` for `Dispatcher.feed_update` (no network).
- `FakeBotAPIServer` serves it on 127.0.0.1 (what TELEGRAM_API_URL points at), including a
  long-polling `getUpdates` fed by `push_message`, for end-to-end tests of `python -m <bot>`.
- `BotProcess` runs the bot as a subprocess, so tests can stop it with real signals; several
  processes can share one server (updates are handed out once, like Telegram does).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiohttp import web

BOT_USER = {"id": 4242, "is_bot": True, "first_name": "Food test bot", "username": "food_test_bot"}


@dataclass(frozen=True)
class ApiCall:
    method: str
    params: dict[str, Any]


class UnknownMethodError(Exception):
    """The bot called a Bot API method the fake does not implement."""


class FakeTelegram:
    """The Bot API methods the bot uses, answered with valid objects and recorded."""

    def __init__(self) -> None:
        self.calls: list[ApiCall] = []
        self._message_ids = itertools.count(1)

    def answer(self, method: str, params: Mapping[str, Any]) -> Any:
        self.calls.append(ApiCall(method, dict(params)))
        if method == "getMe":
            return BOT_USER
        if method == "sendMessage":
            return {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "from": BOT_USER,
                "text": str(params["text"]),
            }
        if method in {"deleteWebhook", "close", "logOut"}:
            return True
        raise UnknownMethodError(method)

    def sent_texts(self, chat_id: int | None = None) -> list[str]:
        """Texts of every sendMessage so far, optionally only those to `chat_id`."""
        return [
            str(call.params["text"])
            for call in self.calls
            if call.method == "sendMessage"
            and (chat_id is None or int(call.params["chat_id"]) == chat_id)
        ]


class FakeSession(BaseSession):
    """An aiogram session that answers from `FakeTelegram` instead of the network."""

    def __init__(self, telegram: FakeTelegram | None = None) -> None:
        super().__init__()
        self.telegram = telegram or FakeTelegram()

    async def make_request(
        self, bot: Bot, method: TelegramMethod[TelegramType], timeout: int | None = None
    ) -> TelegramType:
        # Encode the parameters as aiogram's HTTP session does (defaults applied, JSON strings).
        files: dict[str, Any] = {}
        params = {
            key: prepared
            for key, value in method.model_dump(warnings=False).items()
            if (prepared := self.prepare_value(value, bot=bot, files=files)) is not None
        }
        result = self.telegram.answer(method.__api_method__, params)
        # Parse through aiogram's own response handling, like a real HTTP answer would be.
        content = json.dumps({"ok": True, "result": result})
        response = self.check_response(bot, method, 200, content)
        return response.result  # type: ignore[return-value]

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        raise UnknownMethodError(f"no file at {url}")
        yield b""  # type: ignore[unreachable]  # an async generator, like the base class

    async def close(self) -> None:
        """Nothing to close: no network."""


def message_update(
    update_id: int,
    user_id: int,
    text: str | None,
    *,
    username: str | None = "alice",
    first_name: str = "Alice",
    last_name: str | None = None,
    chat_type: str = "private",
) -> dict[str, Any]:
    """A Bot API `Update` with a message; `text=None` sends a location instead of text."""
    user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
    if username is not None:
        user["username"] = username
    if last_name is not None:
        user["last_name"] = last_name
    chat_id = user_id if chat_type == "private" else -1000000000000 - user_id
    chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
    if chat_type != "private":
        chat["title"] = "A group"
    message: dict[str, Any] = {
        "message_id": update_id,
        "date": int(time.time()),
        "chat": chat,
        "from": user,
    }
    if text is None:
        message["location"] = {"latitude": 52.52, "longitude": 13.40}
    else:
        message["text"] = text
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    return {"update_id": update_id, "message": message}


class FakeBotAPIServer:
    """The fake Bot API over HTTP on 127.0.0.1, for a bot started with TELEGRAM_API_URL."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.telegram = FakeTelegram()
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.port = 0
        #: Most updates one getUpdates call returns (Telegram's `limit`); lower it to make
        #: several polling processes share a burst.
        self.batch_size = 100

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/bot{token}/{method}", self._handle)
        app.router.add_route("GET", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        # Wake long-polling getUpdates calls so shutdown does not wait out their timeout.
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    async def push_message(self, user_id: int, text: str | None, **fields: Any) -> int:
        """Queue a message from `user_id` for the next getUpdates; returns its update_id."""
        update_id = next(self._update_ids)
        async with self._changed:
            self._updates.append(message_update(update_id, user_id, text, **fields))
            self._changed.notify_all()
        return update_id

    def sent_texts(self, chat_id: int | None = None) -> list[str]:
        return self.telegram.sent_texts(chat_id)

    def calls(self, method: str) -> list[ApiCall]:
        return [call for call in self.telegram.calls if call.method == method]

    async def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
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

    async def wait_polling(self, timeout: float = 20.0) -> None:
        """Wait until a bot asks for updates, i.e. it started and is ready."""
        await self.wait_for(lambda: bool(self.calls("getUpdates")), timeout, "getUpdates")

    async def say(
        self, user_id: int, text: str | None, expect: int, timeout: float = 15.0, **fields: Any
    ) -> list[str]:
        """Send a message and return the next `expect` texts the bot sends to this user."""
        before = len(self.sent_texts(user_id))
        await self.push_message(user_id, text, **fields)
        await self.wait_for(
            lambda: len(self.sent_texts(user_id)) >= before + expect,
            timeout,
            f"{expect} answer(s) to {text!r}",
        )
        return self.sent_texts(user_id)[before:]

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        params = await self._params(request)
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
            self._changed.notify_all()
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    async def _params(request: web.Request) -> dict[str, Any]:
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


SETTING_NAMES = (
    "BOT_TOKEN",
    "TELEGRAM_API_URL",
    "REDIS_URL",
    "REDIS_CLUSTER",
    "REDIS_MAX_CONNECTIONS",
    "REDIS_POOL_TIMEOUT",
    "REDIS_SOCKET_TIMEOUT",
    "REDIS_RETRIES",
    "REDIS_HEALTH_CHECK_INTERVAL",
    "FOOD_API_URL",
    "FOOD_API_TIMEOUT",
    "STATE_KEY",
    "STATE_TTL",
    "LOCK_TTL",
    "LOCK_WAIT_TIMEOUT",
    "LOG_LEVEL",
    "SHUTDOWN_TIMEOUT",
    "MAX_CONCURRENT_UPDATES",
    "MAX_PENDING_UPDATES",
    "MAX_QUEUED_PER_USER",
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def bot_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """The test's environment without any bot setting of the developer's, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


class BotProcess:
    """`python -m <package> [args]` as a subprocess, its stdout and stderr in `log_path`.

    It runs in `workdir` (not the project root) so a developer's `.env` never leaks in.
    """

    def __init__(
        self, package: str, settings: Mapping[str, str], workdir: Path, *args: str
    ) -> None:
        self.package = package
        self.env = bot_environment(settings)
        self.workdir = workdir
        self.args = args
        self.log_path = workdir / f"{package}-{id(self)}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.package,
                *self.args,
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"bot did not exit within {timeout}s; log:\n{self.log()}"
            ) from None

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` and return the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        return await self.wait(timeout)

    async def kill(self) -> None:
        """Hard stop for cleanup after a failed test."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
