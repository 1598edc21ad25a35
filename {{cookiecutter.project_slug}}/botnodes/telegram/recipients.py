"""Who the bot can write to: every user it has talked to, and who of them blocked it.

A broadcast must find its recipients without `KEYS`/`SCAN` over the whole keyspace, so
users are registered as they arrive, in `SHARDS` Redis sets, each with its own Cluster hash
tag (no single key gets hot, and a big user base spreads over the cluster). A shard's
blocked users and its broadcast jobs share that tag, so one script can check all three.

Registering costs one `SADD` per user per process lifetime (a process remembers whom it
registered), not one per update, sent in botnodes' batch with the lock script of that update
(`batch_with(nodes.run_script)`): no round trip of its own. It is started as the update
arrives and awaited only after the update was handled, never before the user's queue: an
await there would let a new user's second update overtake their first. Users who last
wrote before this registry existed are added when they write again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Dispatcher, Router
from aiogram.types import ChatMemberUpdated, TelegramObject
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from .middlewares import Handler
from .redis_connection import RedisClient
from .send_limits import hash_tag

logger = logging.getLogger(__name__)

SHARDS = 16
#: Users a process remembers as registered; past it, it forgets them all and starts again.
_REMEMBERED = 100_000

#: KEYS[1] a shard's set, ARGV[1] the user: a script only so it can join botnodes' batches.
REGISTER = "return redis.call('SADD', KEYS[1], ARGV[1])"

Runner = Callable[[AsyncScript, list[str], list[str]], Awaitable[Any]]


class Recipients:
    """The registry of users and blocked users, partitioned into `SHARDS` sets."""

    def __init__(self, redis: RedisClient, key_prefix: str) -> None:
        self.redis = redis
        self._prefix = key_prefix
        self._register = redis.register_script(REGISTER)
        self._run: Runner | None = None

    def batch_with(self, run: Runner) -> None:
        """Send registrations in botnodes' batches (`nodes.run_script`): no round trip more."""
        self._run = run

    def shard_key(self, shard: int) -> str:
        """The shard's set of user ids; its hash tag is the whole name."""
        return hash_tag(f"{self._prefix}:users:{shard}")

    def blocked_key(self, shard: int) -> str:
        return self.shard_key(shard) + ":blocked"

    def job_key(self, shard: int, job_id: str) -> str:
        """A broadcast job's record of the shard's users: who got it, who was skipped."""
        return self.shard_key(shard) + ":job:" + job_id

    @staticmethod
    def shard_of(user_id: int) -> int:
        return user_id % SHARDS

    async def add(self, user_id: int) -> None:
        key = self.shard_key(self.shard_of(user_id))
        if self._run is None:
            await self.redis.sadd(key, user_id)
        else:
            await self._run(self._register, [key], [str(user_id)])

    async def block(self, user_id: int) -> None:
        """The user blocked the bot (a 403, or `my_chat_member` kicked): broadcasts skip them."""
        await self.redis.sadd(self.blocked_key(self.shard_of(user_id)), user_id)

    async def unblock(self, user_id: int) -> None:
        await self.redis.srem(self.blocked_key(self.shard_of(user_id)), user_id)


class RegisterUsers(BaseMiddleware):
    """Adds each user who sends an update to the registry, once per process.

    The registration runs beside the update, not ahead of it (see the module docstring), and
    the update waits for it only once handled, so "handled" still means "registered".
    """

    def __init__(self, recipients: Recipients) -> None:
        self._recipients = recipients
        self._registered: set[int] = set()
        #: Registrations started and not yet answered, so a burst sends one, not one each.
        self._starting: dict[int, asyncio.Task[None]] = {}

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user = data.get("event_from_user")
        registering: asyncio.Task[None] | None = None
        if user is not None and user.id not in self._registered:
            registering = self._starting.get(user.id)
            if registering is None:
                registering = asyncio.ensure_future(self._register(user.id))
                self._starting[user.id] = registering
        result = await handler(event, data)
        if registering is not None:  # done by now (it rode in the lock's batch); a failed or
            # cancelled update does not wait for it: the next one of the user registers
            await asyncio.shield(registering)
        return result

    async def _register(self, user_id: int) -> None:
        try:
            await self._recipients.add(user_id)
        except (RedisError, OSError) as error:  # the update matters more; the next one retries
            logger.warning("Could not register user %s for broadcasts: %r", user_id, error)
        else:
            if len(self._registered) >= _REMEMBERED:
                self._registered.clear()
            self._registered.add(user_id)
        finally:
            self._starting.pop(user_id, None)


def membership_router(recipients: Recipients) -> Router:
    """`my_chat_member`: a user who blocks the bot is marked blocked, and unmarked on return."""
    router = Router(name=f"{__name__}.membership")

    @router.my_chat_member()
    async def membership(update: ChatMemberUpdated) -> None:
        if update.chat.type != "private":
            return
        status = update.new_chat_member.status
        if status == "kicked":
            await recipients.block(update.chat.id)
        elif status == "member":
            await recipients.unblock(update.chat.id)

    return router


def watch_users(dispatcher: Dispatcher, recipients: Recipients) -> None:
    """Register arriving users and follow who blocks the bot, on `dispatcher`."""
    dispatcher.update.outer_middleware(RegisterUsers(recipients))
    dispatcher.include_router(membership_router(recipients))
