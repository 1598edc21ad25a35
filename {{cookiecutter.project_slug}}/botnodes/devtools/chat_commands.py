"""One chat conversation: a typed line goes to the bot as a message, a `:command` acts on it.

`Chat` talks to the bot through the test client (`BotTestClient`), so the chat is the real bot
without Telegram; it prints replies as Telegram would show them, their buttons numbered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from pydantic import TypeAdapter, ValidationError

from ..telegram.settings import Duration
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


_DURATION: TypeAdapter[timedelta] = TypeAdapter(Duration)
#: An IETF language tag as Telegram sends it: `ru`, `en-GB`, `pt-br`.
_LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")


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
