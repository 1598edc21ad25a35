"""`python -m <package> chat`: talk to the real bot in a terminal, without Telegram or a token.

It is the bot itself (the same dispatcher, routers, middlewares, nodes and botnodes, on a
throw-away Redis) with the Bot API replaced by the in-process stand-in of `botnodes.testing`:
what you type goes in as a private message, replies print as Telegram would show them with
their buttons numbered, and `:1` presses button 1. It reads lines, so it also works with a pipe:

    printf 'hi\\n:1\\nPizza\\n' | python -m <package> chat --name alice

The terminal belongs to the main thread (line editing and history through `readline`, and
Ctrl+C ends it at once, even while the bot is busy); the bot runs on an event loop in a
second thread. Log lines go to a file, not between the bot's replies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import importlib
import json
import logging
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from pydantic import SecretStr, TypeAdapter, ValidationError
from redis.asyncio import Redis

from botnodes import ConfigurationError

from ..telegram.definition import BotDefinition
from ..telegram.settings import BotSettings, Duration
from ..testing import BotTestClient, Reply, TestUser

HELP = """\
Type a message and press Enter: it reaches the bot as a private message.
  :1, :2, ...   press that button of the latest message with buttons
  :buttons      list your messages with buttons, numbered, oldest first
  :press M N    press button N of message M of :buttons (an old one is out of date)
  :node         show your node and its stored data
  :user ID      talk as another user (each has their own name and conversation)
  :lang CODE    the language Telegram reports for you (ru, en-GB...; :lang - for none);
                /language chooses one in the bot, and that choice wins
  :reset        forget your conversation (the next message starts over)
  :wait 30m     let time pass (90, 30m, 24h, PT1H...): the timers that fall due fire
  :pay          pay the latest invoice (PAYMENTS=provider or stars), as Telegram would
  :log          show the latest log lines (the bot logs to a file, not here)
  :help         this help
  :quit         leave (or Ctrl+D; Ctrl+C leaves at once)"""

#: How many of the latest log lines `:log` shows.
LOG_LINES = 10
#: How long a leaving chat waits for the bot to finish the message in hand.
STOP_TIMEOUT = 2.0
#: Exit status after Ctrl+C, as a shell reports a program ended by SIGINT.
EXIT_INTERRUPTED = 130
#: Exit status for a setting the bot refuses (as `run` exits).
EXIT_CONFIG_ERROR = 2


_DURATION: TypeAdapter[timedelta] = TypeAdapter(Duration)
#: An IETF language tag as Telegram sends it: `ru`, `en-GB`, `pt-br`.
_LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")


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
            "chat starts a throw-away redis-server and there is none on PATH: install Redis "
            "(apt-get install redis-server, brew install redis), or use --redis-from-env to "
            "chat on the Redis of REDIS_URL"
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
async def settings_with_redis(
    settings: BotSettings, out: TextIO, *, from_env: bool = False
) -> AsyncIterator[BotSettings]:
    """`settings` with a throw-away Redis; with `from_env`, REDIS_URL's (said so either way).

    The chat's made-up users would otherwise land in the bot's keys and among the recipients
    of the next broadcast: the bot's real data is used only when asked for.
    """
    if from_env:
        url = settings.redis.url.get_secret_value()
        if not await redis_answers(url):
            raise ChatError("--redis-from-env: no Redis answers at REDIS_URL")
        parts = urlsplit(url)
        where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
        print(
            f"Using the Redis of REDIS_URL ({where}): the chat's users are stored there.", file=out
        )
        yield settings
        return
    with throwaway_redis() as url:
        print(f"Using a throw-away redis-server at {url}: nothing is kept.", file=out)
        redis = settings.redis.model_copy(update={"url": SecretStr(url), "cluster": False})
        yield dataclasses.replace(settings, redis=redis)


class Chat:
    """One terminal conversation; `handle` takes a typed line and prints what happens."""

    def __init__(self, client: BotTestClient, out: TextIO, name: str, log_path: Path) -> None:
        self.client = client
        self.out = out
        self.name = name
        self.log_path = log_path
        #: What Telegram reports as the user's `language_code` (None: it reports nothing).
        self.language_code: str | None = None
        self.user = self._user(1)

    def _user(self, user_id: int) -> TestUser:
        # Every user has their own name, so the bot greets user 2 as user2, not as user 1.
        name = self.name if user_id == 1 else f"user{user_id}"
        return self.client.user(
            user_id, username=name, first_name=name.title(), language_code=self.language_code
        )

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
            await self._press_latest(int(command))
            return True
        action = self._commands.get(command)
        if action is None:
            self._say(f"(unknown command :{command}; :help lists them)")
        else:
            await action(argument.strip())
        return True

    @property
    def _commands(self) -> dict[str, Callable[[str], Awaitable[None]]]:
        """The `:name argument` commands (`:1`, `:2`... and `:quit` are `handle`'s own)."""
        return {
            "buttons": self._list_buttons,
            "press": self._press_listed,
            "node": self._show_node,
            "user": self._switch_user,
            "lang": self._set_language_code,
            "wait": self._wait,
            "pay": self._pay,
            "reset": self._reset,
            "log": self._show_log,
            "help": self._help,
        }

    async def _help(self, _: str) -> None:
        self._say(HELP)

    async def _switch_user(self, argument: str) -> None:
        if not argument.isdigit():
            self._say("(:user takes a number, like :user 2)")
            return
        self.user = self._user(int(argument))
        self._say(f"(now talking as user {self.user.user_id}, {self.user_name})")

    async def _reset(self, _: str) -> None:
        await self.client.nodes.user(self.user.user_id).forget()
        self._say("(forgotten: your next message starts over)")

    @property
    def user_name(self) -> str:
        return self.name if self.user.user_id == 1 else f"user{self.user.user_id}"

    def _with_buttons(self) -> list[Reply]:
        return [reply for reply in self.user.replies() if reply.buttons]

    async def _press_latest(self, number: int) -> None:
        with_buttons = self._with_buttons()
        labels = _labels(with_buttons[-1]) if with_buttons else []
        if not 1 <= number <= len(labels):
            self._say(f"(there is no button {number}; the latest buttons are {labels or 'none'})")
            return
        await self._press(labels[number - 1], with_buttons[-1])

    async def _list_buttons(self, _: str) -> None:
        listed = self._with_buttons()
        if not listed:
            self._say("(no message with buttons yet)")
        for number, reply in enumerate(listed, 1):
            buttons = "  ".join(f"[{n}] {label}" for n, label in enumerate(_labels(reply), 1))
            self._say(f"({number}) {reply.text.splitlines()[0]}  {buttons}")

    async def _press_listed(self, argument: str) -> None:
        numbers = argument.split()
        listed = self._with_buttons()
        if len(numbers) != 2 or not all(number.isdigit() for number in numbers):
            self._say("(:press takes two numbers: the message of :buttons, then the button)")
            return
        message, button = (int(number) for number in numbers)
        if not 1 <= message <= len(listed) or not 1 <= button <= len(_labels(listed[message - 1])):
            self._say(f"(there is no button {button} on message {message}; :buttons lists them)")
            return
        await self._press(_labels(listed[message - 1])[button - 1], listed[message - 1])

    async def _press(self, label: str, message: Reply) -> None:
        self._show(await self.user.click(label, on=message))
        if self.user.last_answer:
            self._say(f"     ({self.user.last_answer})")

    async def _set_language_code(self, code: str) -> None:
        if code != "-" and not _LANGUAGE_CODE.fullmatch(code):
            self._say("(:lang takes a language code, like ru or en-GB, or - for none)")
            return
        self.language_code = None if code == "-" else code
        self.user = self._user(self.user.user_id)
        reported = self.language_code or "no language"
        self._say(f"(Telegram now reports {reported} for user {self.user.user_id})")

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

    async def _pay(self, _: str) -> None:
        try:
            payment = await self.user.pay()
        except LookupError:
            self._say("(no invoice to pay: with PAYMENTS=provider or stars, Finish sends one)")
            return
        if not payment.ok:
            self._say(f"(Telegram shows: {payment.error})")
        self._show(payment.replies)

    async def _show_node(self, _: str) -> None:
        node = await self.user.node()
        if node is None:
            self._say("(no node yet: your next message meets the start node)")
            return
        data = json.dumps(node._data.model_dump(mode="json"), ensure_ascii=False)
        self._say(f"(on {type(node).__name__}: {data})")

    async def _show_log(self, _: str) -> None:
        logged = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        self._say("\n".join(logged[-LOG_LINES:]) or f"(nothing logged yet in {self.log_path})")

    def _show(self, replies: list[Reply]) -> None:
        for reply in replies:
            first, *rest = reply.text.splitlines() or [""]
            self._say(f"bot> {first}")
            for line in rest:
                self._say(f"     {line}")
            labels = _labels(reply)
            if labels:
                self._say(
                    "     " + "  ".join(f"[{n}] {label}" for n, label in enumerate(labels, 1))
                )

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def _labels(reply: Reply) -> list[str]:
    return [label for row in reply.buttons for label in row]


class BotThread:
    """The bot on an event loop of its own thread; `handle` runs one line there and waits.

    Keeping the loop off the main thread leaves the terminal there: `input()` edits lines
    with readline, and Ctrl+C interrupts the main thread whatever the bot is doing.
    """

    def __init__(
        self,
        definition: BotDefinition[Any, Any],
        settings: BotSettings,
        out: TextIO,
        name: str,
        log_path: Path,
        *,
        redis_from_env: bool = False,
    ) -> None:
        self._definition = definition
        self._redis_from_env = redis_from_env
        self._args = (settings, out, name, log_path)
        self._loop = asyncio.new_event_loop()
        self._lines: asyncio.Queue[tuple[str, concurrent.futures.Future[bool]] | None]
        self._lines = asyncio.Queue()  # bound to the loop that first waits on it
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, name="chat-bot", daemon=True)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the bot; raises what stopped it from starting (ChatError, ...)."""
        self._thread.start()
        self._ready.result()

    def handle(self, line: str) -> bool:
        """Run one typed line through the bot; False when the user wants to leave."""
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(self._lines.put_nowait, (line, done))
        return done.result()

    def stop(self) -> None:
        """Leave: let the bot finish the line in hand for a moment, then cut it short."""
        with contextlib.suppress(RuntimeError):  # the loop may close meanwhile: nothing to do
            if self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._lines.put_nowait, None)
                self._thread.join(STOP_TIMEOUT)
            if self._thread.is_alive() and self._task is not None:
                self._loop.call_soon_threadsafe(self._task.cancel)
                self._thread.join(STOP_TIMEOUT)

    def _run(self) -> None:
        # Ctrl+C's SIGINT goes to one thread that doesn't block it: let that be the main one,
        # whose input() it interrupts (here it would only wait until the next key press).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # handed to the main thread, which reports it
            if not self._ready.done():
                self._ready.set_exception(exc)
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._task = asyncio.current_task()
        settings, out, name, log_path = self._args
        async with (
            settings_with_redis(settings, out, from_env=self._redis_from_env) as usable,
            BotTestClient.start(self._definition, usable) as client,
        ):
            conversation = Chat(client, out, name, log_path)
            conversation._say(
                f"Chatting with the bot as {name} (user 1), no Telegram needed. "
                "Type a message; :1 presses button 1; :help for more. "
                f"Log lines go to {log_path} (:log shows them)."
            )
            self._ready.set_result(None)
            while (item := await self._lines.get()) is not None:
                line, done = item
                try:
                    done.set_result(await conversation.handle(line))
                except Exception as exc:  # the main thread reports it and leaves
                    done.set_exception(exc)


def converse(bot: BotThread, stdin: TextIO, out: TextIO) -> None:
    """Read lines until :quit or the end of input, handing each to the bot."""
    interactive = stdin.isatty()
    if interactive:
        importlib.import_module("readline")  # from now on input() edits lines, with history
    while True:
        if interactive:
            try:
                line = input("you> ")
            except EOFError:  # Ctrl+D
                print(file=out)
                return
        else:
            line = stdin.readline()
            if not line:
                return
            print(f"you> {line.rstrip()}", file=out, flush=True)
        if not bot.handle(line):
            return


def log_to_file(path: Path) -> None:
    """Send the log (as `setup_logging` formats and masks it) to `path` instead of stderr.

    The file starts empty: `:log` shows this chat's lines, not an earlier one's.
    """
    stream = path.open("w", encoding="utf-8")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            handler.setStream(stream)
    # aiogram logs every handled update at INFO: noise even in the file.
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)


def default_log_path(package: str) -> Path:
    return Path(tempfile.gettempdir()) / f"{package}-chat.log"


def run_chat(
    definition: BotDefinition[Any, Any],
    settings: BotSettings,
    name: str,
    log_path: Path,
    *,
    redis_from_env: bool = False,
) -> int:
    """The command: chat until :quit, Ctrl+D or Ctrl+C; one line if the bot can't start."""
    log_to_file(log_path)
    bot = BotThread(definition, settings, sys.stdout, name, log_path, redis_from_env=redis_from_env)
    try:
        bot.start()
        converse(bot, sys.stdin, sys.stdout)
    except KeyboardInterrupt:
        print(file=sys.stdout, flush=True)
        return EXIT_INTERRUPTED
    except ChatError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ConfigurationError as exc:  # botnodes refused a value, as `run` reports it
        print(f"Configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    finally:
        bot.stop()
    return 0
