"""`Nodes`: routes each event to the user's node, one per user at a time, and stores the result."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic

from redis.exceptions import RedisError

from .codec import Decoded, NodeCodec
from .errors import ConfigurationError, CorruptStateError, LockTimeoutError, StateUnavailableError
from .keyed_lock import KeyedLock
from .node import CtxT, EventT, Node, UserIdT
from .observer import NodesObserver
from .storage import RedisClient, StateStore

logger = logging.getLogger("botnodes")

_MAX_LOCK_POLL = 0.05  # seconds between two tries of a lock held by another process


@dataclass(slots=True)
class _Held:
    """What one locked section knows: the user's token, the stored value and how long it waited."""

    user_id: Any
    token: str
    raw: str | None
    lock_wait: float
    committed: bool = False
    from_legacy: bool = False


class Nodes(Generic[CtxT, EventT, UserIdT]):
    """Keeps every user on a node in Redis and routes their events to it.

    One user's events run one at a time, in arrival order, across all processes that share
    the Redis: in a process they queue on a local lock, between processes on a Redis lock
    that a dead process can hold for at most `lock_ttl` seconds.
    """

    def __init__(  # noqa: PLR0917 - positional like botnodes 0.1.0, for compatibility
        self,
        redis_client: RedisClient,
        redis_property_name: str,
        nodes_dict: Mapping[str, type[Node[CtxT, EventT, UserIdT, Any]]],
        discriminator_field: str,
        get_start_node: Callable[[EventT], Node[CtxT, EventT, UserIdT, Any]],
        ctx: CtxT,
        event_to_user_id: Callable[[EventT], UserIdT],
        *,
        key_aliases: Mapping[str, str] | None = None,
        state_ttl: float | None = None,
        lock_ttl: float = 30.0,
        lock_wait_timeout: float = 10.0,
        migrate_legacy: bool = True,
        observer: NodesObserver | None = None,
    ) -> None:
        if not isinstance(redis_property_name, str) or not redis_property_name:
            raise ConfigurationError(
                f"redis_property_name {redis_property_name!r} must be a non-empty string"
            )
        if "{" in redis_property_name or "}" in redis_property_name:
            raise ConfigurationError(
                f"redis_property_name {redis_property_name!r} must not contain braces: "
                "botnodes adds the Redis Cluster hash tag itself"
            )
        _require_positive("lock_ttl", lock_ttl)
        _require_positive("lock_wait_timeout", lock_wait_timeout)
        if state_ttl is not None:
            _require_positive("state_ttl", state_ttl)
        self._codec: NodeCodec[CtxT, EventT, UserIdT] = NodeCodec(
            nodes_dict, discriminator_field, key_aliases
        )
        self._store = StateStore(
            redis_client,
            redis_property_name,
            state_ttl_ms=math.ceil(state_ttl * 1000) if state_ttl else None,
            lock_ttl_ms=math.ceil(lock_ttl * 1000),
            legacy=migrate_legacy,
        )
        self._get_start_node = get_start_node
        self._ctx = ctx
        self._event_to_user_id = event_to_user_id
        self._observer = observer or NodesObserver()
        self._lock_wait_timeout = lock_wait_timeout
        self._local_locks: KeyedLock[UserIdT] = KeyedLock()
        self._token_prefix = secrets.token_hex(8)
        self._token_counter = itertools.count()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """How many routes or `to()` calls are running now."""
        return self._in_flight

    @property
    def busy_users(self) -> int:
        """How many users have an event being handled or waiting in this process."""
        return len(self._local_locks)

    def user(self, user_id: UserIdT) -> NodesUser[CtxT, EventT, UserIdT]:
        """Address one user from outside an event (e.g. a /start command or a scheduled job)."""
        return NodesUser(self, user_id)

    async def route(self, event: EventT) -> None:
        """Handle one event: pass it to the user's node and store the node that comes next.

        A user without a stored node gets `get_start_node(event)`; its `on_enter` runs and
        this first event is not passed to `on_event`. An exception in `on_event` is logged
        and leaves the user where they were. Raises StateUnavailableError (nothing changed)
        when Redis can't be reached or the user's lock can't be had in time.
        """
        user_id = self._event_to_user_id(event)
        started = time.perf_counter()
        async with self._locked(user_id) as held:
            current = await self._load(held)
            from_key = current.key if current else None
            if current is None:
                next_node = self._get_start_node(event)
                entering = True
            else:
                try:
                    returned = await current.node.on_event(user_id, event, self._ctx)
                    if returned is not None:  # an unregistered node could never be read back
                        self._codec.key_of(returned)
                except Exception:
                    self._notify(lambda: self._observer.node_failed(current.key, "on_event"))
                    logger.exception(
                        "on_event of node %r failed for user %s; user stays on it, data unchanged",
                        current.key,
                        user_id,
                        extra={"user_id": user_id, "node": current.key},
                    )
                    return
                entering = returned is not None
                next_node = returned if returned is not None else current.node
            if entering:
                await self._enter(next_node, user_id)
            to_key = await self._commit(held, next_node)
        duration = time.perf_counter() - started
        self._notify(lambda: self._observer.transition(from_key, to_key, duration, held.lock_wait))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "transition user=%s from=%s to=%s duration_ms=%.1f lock_wait_ms=%.1f",
                user_id,
                from_key,
                to_key,
                duration * 1000,
                held.lock_wait * 1000,
                extra={
                    "user_id": user_id,
                    "from_node": from_key,
                    "to_node": to_key,
                    "duration_ms": duration * 1000,
                    "lock_wait_ms": held.lock_wait * 1000,
                },
            )

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - returns False, never raises
        """Wait until no event is being handled; False if some still run after `timeout` seconds.

        Call it on shutdown after the bot stopped taking updates, so no transition is cut in half.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def _put(self, user_id: UserIdT, node: Node[CtxT, EventT, UserIdT, Any]) -> None:
        self._codec.key_of(node)
        async with self._locked(user_id) as held:
            await self._enter(node, user_id)
            await self._commit(held, node)

    async def _get(self, user_id: UserIdT) -> Node[CtxT, EventT, UserIdT, Any] | None:
        try:
            raw = await self._store.read(user_id)
        except RedisError as error:
            raise self._unavailable(user_id, error) from error
        if raw is None:
            return None
        try:
            return self._codec.decode(raw).node
        except CorruptStateError as error:
            logger.warning(
                "stored state of user %s can't be read (%s); get_node() returns None",
                user_id,
                error.reason,
                extra={"user_id": user_id},
            )
            return None

    @asynccontextmanager
    async def _locked(self, user_id: UserIdT) -> AsyncIterator[_Held]:
        """Hold the user's local and Redis locks; release without writing unless committed."""
        started = time.perf_counter()
        self._in_flight += 1
        self._idle.clear()
        try:
            if not await self._local_locks.acquire(user_id, wait_seconds=self._lock_wait_timeout):
                raise self._lock_timeout(user_id)
            try:
                held = await self._lock_remote(user_id, started)
                try:
                    yield held
                finally:
                    if not held.committed:
                        await self._release(held)
            finally:
                self._local_locks.release(user_id)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _lock_remote(self, user_id: UserIdT, started: float) -> _Held:
        token = f"{self._token_prefix}:{next(self._token_counter)}"
        deadline = started + self._lock_wait_timeout
        delay = 0.002
        while True:
            try:
                locked = await self._store.try_lock_and_read(user_id, token)
            except RedisError as error:
                raise self._unavailable(user_id, error) from error
            now = time.perf_counter()
            if locked.taken:
                return _Held(
                    user_id=user_id,
                    token=token,
                    raw=locked.value,
                    lock_wait=now - started,
                    from_legacy=locked.from_legacy,
                )
            if now >= deadline:
                raise self._lock_timeout(user_id)
            await asyncio.sleep(min(delay, deadline - now, max(locked.lock_left_ms, 1) / 1000))
            delay = min(delay * 2, _MAX_LOCK_POLL)

    async def _load(self, held: _Held) -> Decoded[CtxT, EventT, UserIdT] | None:
        """Decode the user's node; None means start over (a new user, or unreadable state)."""
        raw = held.raw
        if raw is None:
            return None
        if held.from_legacy:
            logger.info("moving user %s out of the botnodes 0.1.0 hash", held.user_id)
        try:
            decoded = self._codec.decode(raw)
        except CorruptStateError as error:
            reason = error.reason
            self._notify(lambda: self._observer.reset(reason))
            logger.warning(
                "resetting user %s to the start node: %s",
                held.user_id,
                error.reason,
                extra={"user_id": held.user_id, "reason": error.reason},
            )
            return None
        if decoded.upgraded:
            logger.warning(
                "upgraded stored state of user %s: %s",
                held.user_id,
                decoded.upgraded,
                extra={"user_id": held.user_id},
            )
        return decoded

    async def _enter(self, node: Node[CtxT, EventT, UserIdT, Any], user_id: UserIdT) -> None:
        """Run on_enter; a failure is logged and the transition kept: on_event already acted."""
        try:
            await node.on_enter(user_id, self._ctx)
        except Exception:
            key = self._codec.key_of(node)
            self._notify(lambda: self._observer.node_failed(key, "on_enter"))
            logger.exception(
                "on_enter of node %r failed for user %s; the user is stored on it anyway",
                key,
                user_id,
                extra={"user_id": user_id, "node": key},
            )

    async def _commit(self, held: _Held, node: Node[CtxT, EventT, UserIdT, Any]) -> str:
        key = self._codec.key_of(node)
        value = self._codec.encode(node)
        held.committed = True
        try:
            saved = await self._store.write_and_unlock(
                held.user_id, held.token, value, forget_legacy=held.from_legacy
            )
        except RedisError as error:
            raise self._unavailable(held.user_id, error) from error
        if not saved:
            logger.error(
                "lock of user %s expired before node %r was saved; the newer state wins "
                "and this transition is dropped (raise lock_ttl if handlers run this long)",
                held.user_id,
                key,
                extra={"user_id": held.user_id, "node": key},
            )
        return key

    async def _release(self, held: _Held) -> None:
        try:
            await self._store.write_and_unlock(held.user_id, held.token, None)
        except RedisError as error:
            self._notify(self._observer.redis_error)
            logger.warning(
                "could not release the lock of user %s (%s); it expires by itself",
                held.user_id,
                error,
                extra={"user_id": held.user_id},
            )

    def _lock_timeout(self, user_id: UserIdT) -> LockTimeoutError:
        logger.warning(
            "user %s: lock not acquired within %.1fs, event not processed",
            user_id,
            self._lock_wait_timeout,
            extra={"user_id": user_id},
        )
        return LockTimeoutError(
            f"the lock of user {user_id} was not free within {self._lock_wait_timeout}s"
        )

    def _notify(self, call: Callable[[], None]) -> None:
        """Run an observer hook; a failing hook is logged, never passed on to routing."""
        try:
            call()
        except Exception:
            logger.exception("botnodes observer %r failed", self._observer)

    def _unavailable(self, user_id: UserIdT, error: RedisError) -> StateUnavailableError:
        self._notify(self._observer.redis_error)
        logger.error(
            "Redis unavailable for user %s: %s", user_id, error, extra={"user_id": user_id}
        )
        return StateUnavailableError(f"state of user {user_id} is unavailable: {error}")


class NodesUser(Generic[CtxT, EventT, UserIdT]):
    """One user's handle, for moving them or looking at their node from outside an event."""

    def __init__(self, nodes: Nodes[CtxT, EventT, UserIdT], user_id: UserIdT) -> None:
        self._nodes = nodes
        self._user_id = user_id

    async def to(self, node: Node[CtxT, EventT, UserIdT, Any]) -> None:
        """Put the user on `node`, running its on_enter, under the same lock as routing."""
        await self._nodes._put(self._user_id, node)

    async def get_node(self) -> Node[CtxT, EventT, UserIdT, Any] | None:
        """The user's current node, or None if they have none (or it can't be read)."""
        return await self._nodes._get(self._user_id)


def _require_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
        raise ConfigurationError(f"{name}={value!r} must be a positive number of seconds")
