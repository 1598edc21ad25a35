"""`python -m <package> chat`: talk to the real bot in a terminal, without Telegram or a token.

It is the bot itself (the same dispatcher, routers, middlewares, nodes and botnodes, on a
throw-away Redis) with the Bot API replaced by the in-process stand-in of `botnodes.testing`:
what you type goes in as a private message, replies print as Telegram would show them with
their buttons numbered, and `:1` presses button 1. It reads lines, so it also works with a pipe:

    printf 'hi\\n:1\\nPizza\\n' | python -m <package> chat --name alice

The terminal belongs to the main thread (line editing and history through `readline`, and
Ctrl+C ends it at once, even while the bot is busy); the bot runs on an event loop in a
second thread. Log lines go to a file, not between the bot's replies.

`Chat` (chat_commands.py) is one conversation; chat_redis.py finds it a Redis; here are the
thread, the terminal and the command.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, TextIO

from botnodes import ConfigurationError

from ..telegram.definition import BotDefinition
from ..telegram.settings import BotSettings
from ..testing import BotTestClient
from .chat_commands import Chat
from .chat_redis import ChatError, settings_with_redis

#: How long a leaving chat waits for the bot to finish the message in hand.
STOP_TIMEOUT = 2.0
#: Exit status after Ctrl+C, as a shell reports a program ended by SIGINT.
EXIT_INTERRUPTED = 130
#: Exit status for a setting the bot refuses (as `run` exits).
EXIT_CONFIG_ERROR = 2


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
