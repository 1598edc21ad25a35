"""Telegram's send limits, kept by every process and replica together through Redis.

Telegram asks a bot for about one message per second in a chat (short bursts are tolerated),
20 per minute in a group and about 30 per second for bulk messages to many users. Replicas
share those limits, so the budgets live in Redis: one Lua script (GCRA, the "generic cell
rate algorithm") per call, which never refuses but hands back how long each message must
wait for its turn. The key of a chat's budget carries the chat id as its Redis Cluster hash
tag (the slot of that user's state), the bulk budget one key of its own: no script touches
two slots.

- Every message sent to a chat takes a turn from that chat's budget: `CHAT_BURST` at once,
  then `CHAT_RATE` per second (`GROUP_RATE` per minute in groups: negative chat ids).
- A broadcast also takes a turn from the bulk budget, `BROADCAST_RATE` per second for all
  processes together (see broadcast.py). Conversation replies never wait on it: a running
  broadcast can't starve them.

What it costs: the replies of one update are counted while its nodes queue them
(`expect_reply`, called by `Ctx.send_message`), and the script that stores the step reserves
their turns in the user's chat (`StepTurns`, botnodes' `ReplyBudget`): no command or round
trip of its own, whatever the number of replies. A reply queued after the commit (an
`after_commit` action sending more) and a send outside an update (a timer's reply, a
broadcast) reserve their turns in one script call of their own; calls made by concurrent
updates in one event-loop turn go to Redis as one pipeline (botnodes' `ScriptPipeline`).
If Redis can't be asked, the message goes out unlimited: a 429 that comes anyway is still
waited out by `RetryTelegram`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import TelegramObject
from redis.asyncio import RedisCluster
from redis.exceptions import RedisError

from botnodes.budget import GCRA_FUNCTION, Reservation
from botnodes.pipelining import ScriptPipeline

from .middlewares import Handler
from .redis_connection import RedisClient
from .settings import SendLimitSettings

logger = logging.getLogger(__name__)

#: Called whenever a message waits for its turn: the budget ("chat", "group", "bulk") and
#: the seconds it waits.
WaitHook = Callable[[str, float], None]

#: The Bot API methods that put a message in a chat: what Telegram's limits count.
SEND_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendVideo",
        "sendAudio",
        "sendVoice",
        "sendAnimation",
        "sendSticker",
        "sendLocation",
        "sendContact",
        "sendPoll",
        "sendDice",
        "sendMediaGroup",
        "sendInvoice",
        "copyMessage",
        "forwardMessage",
    }
)

#: GCRA for `count` messages at once. KEYS[1]: the budget's key, holding the theoretical
#: arrival time (ms) of its next message. ARGV: ms between messages, burst, count.
#: Returns each message's wait in ms, relative to now on the Redis server's clock (one
#: clock for every replica). It never refuses: a turn is a promise of a time.
#: The same algorithm botnodes' commit script runs (budget.py), so both count alike.
GCRA_SCRIPT = (
    GCRA_FUNCTION
    + "return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))\n"
)


def hash_tag(name: str) -> str:
    """`name` in braces: Redis Cluster places every key with the same tag in one slot."""
    return "{" + name + "}"


@dataclass(frozen=True, slots=True)
class Budget:
    """A rate: one message every `interval_ms`, with `burst` at once after a pause."""

    name: str
    interval_ms: int
    burst: int


class SendLimiter:
    """Hands out turns from the budgets in Redis; see the module docstring."""

    def __init__(
        self,
        redis: RedisClient,
        key_prefix: str,
        settings: SendLimitSettings,
        on_wait: WaitHook | None = None,
    ) -> None:
        self._script = redis.register_script(GCRA_SCRIPT)
        # Reservations of concurrent updates share one round trip, as botnodes' own scripts
        # do (a cluster spreads the keys over nodes: there each call goes alone).
        self._pipeline = None if isinstance(redis, RedisCluster) else ScriptPipeline(redis)
        self._prefix = key_prefix
        self._on_wait = on_wait
        self.chat = Budget("chat", round(1000 / settings.chat_rate), settings.chat_burst)
        self.group = Budget("group", round(60_000 / settings.group_rate), settings.chat_burst)
        self.bulk = Budget("bulk", round(1000 / settings.broadcast_rate), 1)
        #: Most broadcast messages in any second as Telegram counts them (bulk_window.py).
        self.bulk_limit = settings.broadcast_limit
        self.bulk_key = f"{key_prefix}:send:" + hash_tag("bulk")

    def chat_key(self, chat_id: int) -> str:
        # The chat id is the hash tag, as in botnodes' keys of that user: the same slot.
        return f"{self._prefix}:send:" + hash_tag(str(chat_id))

    def budget_of(self, chat_id: int) -> Budget:
        """Groups and channels have negative ids and the slower budget."""
        return self.group if chat_id < 0 else self.chat

    async def reserve_chat(self, chat_id: int, count: int = 1) -> list[float]:
        """Turns for `count` messages to `chat_id`: each one's wait in seconds."""
        return await self._reserve(self.chat_key(chat_id), self.budget_of(chat_id), count)

    async def reserve_bulk(self, count: int = 1) -> list[float]:
        """Turns for `count` broadcast messages from the budget all processes share."""
        return await self._reserve(self.bulk_key, self.bulk, count)

    async def _reserve(self, key: str, budget: Budget, count: int) -> list[float]:
        args = [budget.interval_ms, budget.burst, count]
        if self._pipeline is not None:
            waits = await self._pipeline(self._script, [key], args)
        else:
            waits = await self._script(keys=[key], args=args)
        return [int(wait) / 1000 for wait in waits]

    async def wait(self, budget: str, seconds: float) -> None:
        """Sleep until a turn comes, and report the wait to the metrics."""
        if seconds <= 0:
            return
        if self._on_wait is not None:
            self._on_wait(budget, seconds)
        await asyncio.sleep(seconds)


@dataclass
class StepReplies:
    """The replies one update's nodes queued, per chat, and the turns reserved for them."""

    expected: dict[int, int] = field(default_factory=dict)
    #: Loop times at which the reserved turns come, oldest first.
    turns: dict[int, deque[float]] = field(default_factory=dict)


_step: ContextVar[StepReplies | None] = ContextVar("send_limits_step", default=None)


def expect_reply(chat_id: int) -> None:
    """Count a reply queued during the current update (no-op outside one)."""
    step = _step.get()
    if step is not None:
        step.expected[chat_id] = step.expected.get(chat_id, 0) + 1


def use_turn(chat_id: int, at: float) -> None:
    """A turn of `chat_id`'s budget reserved by another script call (the bulk window's): the
    next message to it sent in this context waits until loop time `at` without asking Redis.
    """
    step = _step.get()
    if step is None:
        step = StepReplies()
        _step.set(step)
    step.turns.setdefault(chat_id, deque()).append(at)


class CountStepReplies(BaseMiddleware):
    """Opens a `StepReplies` for each update (a dispatcher outer middleware)."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        token = _step.set(StepReplies())
        try:
            return await handler(event, data)
        finally:
            _step.reset(token)


class StepTurns:
    """botnodes' `ReplyBudget`: the replies an update's nodes queued take their chat's turns
    in the script that stores the step (one command batch fewer per update that replies).

    Only private chats reach the nodes, so the user's id is the chat's id and the budget's
    key carries the user's hash tag, the slot of their state on a Redis Cluster.
    """

    def __init__(self, limiter: SendLimiter) -> None:
        self._limiter = limiter

    def reservation(self, user_id: Any) -> Reservation | None:
        step = _step.get()
        if step is None or not isinstance(user_id, int) or user_id in step.turns:
            return None
        count = step.expected.pop(user_id, 0)
        if count <= 0:
            return None
        budget = self._limiter.budget_of(user_id)
        return Reservation(self._limiter.chat_key(user_id), budget.interval_ms, budget.burst, count)

    def reserved(self, user_id: Any, waits_ms: list[int]) -> None:
        step = _step.get()
        if step is not None:
            now = asyncio.get_running_loop().time()
            step.turns[user_id] = deque(now + wait / 1000 for wait in waits_ms)


#: Seconds a message waits for Redis to give it a turn in its chat's budget; then it is sent
#: without one, as while Redis is down.
TURN_DEADLINE = 2.0


class KeepSendRate(BaseRequestMiddleware):
    """Makes every message to a chat wait for its turn in that chat's shared budget."""

    def __init__(self, limiter: SendLimiter) -> None:
        self._limiter = limiter
        self._redis_warned = False

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        chat_id = getattr(method, "chat_id", None)
        if method.__api_method__ in SEND_METHODS and isinstance(chat_id, int):
            await self._take_turn(chat_id)
        return await make_request(bot, method)

    async def _take_turn(self, chat_id: int) -> None:
        loop = asyncio.get_running_loop()
        step = _step.get()
        turns = step.turns.get(chat_id) if step is not None else None
        if not turns:
            count = max(1, step.expected.pop(chat_id, 0)) if step is not None else 1
            try:
                async with asyncio.timeout(TURN_DEADLINE):  # a frozen Redis holds no reply
                    waits = await self._limiter.reserve_chat(chat_id, count)
            except (RedisError, TimeoutError) as error:
                if not self._redis_warned:  # once: an outage would log it per message
                    logger.warning("Send limits unavailable, sending unlimited: %r", error)
                    self._redis_warned = True
                return
            self._redis_warned = False
            now = loop.time()
            turns = deque(now + wait for wait in waits)
            if step is not None:
                step.turns[chat_id] = turns
        at = turns.popleft()
        await self._limiter.wait(self._limiter.budget_of(chat_id).name, at - loop.time())
