"""`python -m <package> chat`: talk to the real bot in a terminal, without Telegram or a token.

It is the bot itself (the same dispatcher, routers, middlewares, nodes, botnodes and Redis)
with the Bot API replaced by the in-process stand-in of `testing/`: what you type goes in as a
private message, replies print as Telegram would show them with their buttons numbered, and
`:1` presses button 1. It reads lines, so it also works with a pipe:

    printf 'hi\\n:1\\nPizza\\n' | python -m <package> chat --name alice
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import TextIO

from pydantic import SecretStr, TypeAdapter, ValidationError
from redis.asyncio import Redis

from .config import Duration, Settings
from .food_api import create_food_api
from .testing import BotTestClient, Reply, TestUser

HELP = """\
Type a message and press Enter: it reaches the bot as a private message.
  :1, :2, ...   press that button of the latest message with buttons
  :node         show your node and its stored data
  :user ID      talk as another user (each has their own conversation)
  :reset        forget your conversation (the next message starts over)
  :wait 30m     let time pass (90, 30m, 24h, PT1H...): the timers that fall due fire
  :help         this help
  :quit         leave (or Ctrl+D)"""


_DURATION: TypeAdapter[timedelta] = TypeAdapter(Duration)


class ChatError(Exception):
    """Chat can't start; the message is one line that says what to do."""


async def redis_answers(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(await client.ping())
    except Exception:  # any failure means "no usable Redis there"
        return False
    finally:
        await client.aclose()


@contextlib.contextmanager
def throwaway_redis() -> Iterator[str]:
    """A private `redis-server` on a free port of 127.0.0.1, keeping nothing, stopped on exit."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise ChatError(
            "No Redis answers at REDIS_URL and there is no redis-server on PATH: install Redis "
            "(apt-get install redis-server, brew install redis) or set REDIS_URL"
        )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="chat-redis-") as workdir:
        server = subprocess.Popen(  # noqa: S603 - our own arguments, no shell
            [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_for_port(port, server)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(10)


def _wait_for_port(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ChatError(f"redis-server exited at start (port {port})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise ChatError(f"redis-server did not start on port {port} within 10 s")


@contextlib.asynccontextmanager
async def settings_with_redis(settings: Settings, out: TextIO) -> AsyncIterator[Settings]:
    """`settings`, with a throw-away Redis in place of REDIS_URL if nothing answers there."""
    if await redis_answers(settings.redis.url.get_secret_value()):
        yield settings
        return
    with throwaway_redis() as url:
        print(f"No Redis answers at REDIS_URL: using a throw-away redis-server at {url}.", file=out)
        redis = settings.redis.model_copy(update={"url": SecretStr(url), "cluster": False})
        yield dataclasses.replace(settings, redis=redis)


class Chat:
    """One terminal conversation; `handle` takes a typed line and prints what happens."""

    def __init__(self, client: BotTestClient, out: TextIO, name: str) -> None:
        self.client = client
        self.out = out
        self.name = name
        self.user = self._user(1)

    def _user(self, user_id: int) -> TestUser:
        return self.client.user(user_id, username=self.name, first_name=self.name.title())

    async def handle(self, line: str) -> bool:
        """Act on one line; False when the user wants to leave."""
        text = line.rstrip("\r\n")
        if not text.startswith(":"):
            self._show(await self.user.send(text))
            return True
        command, _, argument = text[1:].strip().partition(" ")
        if command in {"quit", "q", "exit"}:
            return False
        if command.isdigit():
            await self._press(int(command))
        elif command == "node":
            await self._show_node()
        elif command == "user" and argument.strip().isdigit():
            self.user = self._user(int(argument))
            self._say(f"(now talking as user {self.user.user_id})")
        elif command == "wait":
            await self._wait(argument.strip())
        elif command == "reset":
            await self.client.nodes.user(self.user.user_id).forget()
            self._say("(forgotten: your next message starts over)")
        elif command == "help":
            self._say(HELP)
        else:
            self._say(f"(unknown command :{command}; :help lists them)")
        return True

    async def _press(self, number: int) -> None:
        with_buttons = [reply for reply in self.user.replies() if reply.buttons]
        labels = (
            [label for row in with_buttons[-1].buttons for label in row] if with_buttons else []
        )
        if not 1 <= number <= len(labels):
            self._say(f"(there is no button {number}; the latest buttons are {labels or 'none'})")
            return
        self._show(await self.user.click(labels[number - 1]))
        if self.user.last_answer:
            self._say(f"     ({self.user.last_answer})")

    async def _wait(self, argument: str) -> None:
        try:
            delta = _DURATION.validate_python(argument)
        except ValidationError:
            self._say("(:wait takes a duration, like 90, 30m, 24h or PT1H)")
            return
        before = len(self.user.replies())
        await self.client.advance(delta)
        self._say(f"({delta} later)")
        self._show(self.user.replies()[before:])

    async def _show_node(self) -> None:
        node = await self.user.node()
        if node is None:
            self._say("(no node yet: your next message meets the start node)")
            return
        data = json.dumps(node._data.model_dump(mode="json"), ensure_ascii=False)
        self._say(f"(on {type(node).__name__}, visit {node.visit}: {data})")

    def _show(self, replies: list[Reply]) -> None:
        for reply in replies:
            first, *rest = reply.text.splitlines() or [""]
            self._say(f"bot> {first}")
            for line in rest:
                self._say(f"     {line}")
            labels = [label for row in reply.buttons for label in row]
            if labels:
                self._say(
                    "     " + "  ".join(f"[{n}] {label}" for n, label in enumerate(labels, 1))
                )

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


async def chat(settings: Settings, stdin: TextIO, out: TextIO, name: str) -> int:
    """Run the conversation until :quit or the end of input."""
    interactive = stdin.isatty()
    async with settings_with_redis(settings, out) as usable:
        food_api = create_food_api(usable.food_api)
        async with BotTestClient.start(usable, food_api=food_api) as client:
            conversation = Chat(client, out, name)
            conversation._say(
                f"Chatting with the bot as {name} (user 1), no Telegram needed. "
                "Type a message; :1 presses button 1; :help for more."
            )
            while True:
                if interactive:
                    print("you> ", end="", file=out, flush=True)
                line = await asyncio.to_thread(stdin.readline)
                if not line:
                    break
                if not interactive:
                    conversation._say(f"you> {line.rstrip()}")
                if not await conversation.handle(line):
                    break
        await food_api.close()
    return 0


def run_chat(settings: Settings, name: str) -> int:
    # aiogram logs every handled update at INFO: in a terminal chat that is noise between replies.
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    try:
        return asyncio.run(chat(settings, sys.stdin, sys.stdout, name))
    except ChatError as exc:
        print(exc, file=sys.stderr)
        return 1
