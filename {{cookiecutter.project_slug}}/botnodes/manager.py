"""`Nodes`: routes each event to the user's node, one per user at a time, and stores the result."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic

from redis.exceptions import RedisError

from .codec import Decoded, NodeCodec
from .errors import (
    ConfigurationError,
    CorruptStateError,
    LockTimeoutError,
    StateUnavailableError,
    TransitionLostError,
    UndeclaredTransitionError,
    UserBusyError,
)
from .graph import FlowGraph
from .keyed_lock import KeyedLock
from .node import CtxT, EventT, Node, UserIdT
from .observer import NodesObserver
from .outbox import Outbox, collecting
from .storage import (
    MAX_TTL_SECONDS,
    REFUSED,
    STORED_WITHOUT_LOCK,
    Locked,
    RedisClient,
    StateStore,
)

logger = logging.getLogger("botnodes")

_MAX_LOCK_POLL = 0.05  # seconds between two tries of a lock held by another process
_MAX_COMMIT_BACKOFF = 1.0  # seconds between two tries of a commit Redis did not take


class Outcome(enum.Enum):
    """What `Nodes.route` did with an event (a bot answers a button press by it)."""

    #: A new (or reset) user was put on the start node; the event was not passed on.
    STARTED = "started"
    #: `on_event` returned a node: it was entered and stored.
    MOVED = "moved"
    #: `on_event` returned None: the node's data was stored, nothing entered.
    STAYED = "stayed"
    #: The event belongs to an older visit (`event_visit`): no node code ran.
    STALE = "stale"
    #: `on_event` raised: logged, and the user stays where they were with their data.
    FAILED = "failed"


@dataclass(slots=True)
class _Held:
    """What one locked section knows: the user's token, what was read, how long it waited."""

    user_id: Any
    token: str
    locked: Locked
    lock_wait: float
    committed: bool = False
    keepalive: asyncio.TimerHandle | asyncio.Future[None] | None = None


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
        event_visit: Callable[[EventT], int | None] | None = None,
        max_concurrent: int | None = None,
        max_waiting_per_user: int | None = None,
        commit_timeout: float | None = None,
        start_node: type[Node[CtxT, EventT, UserIdT, Any]] | None = None,
        strict_transitions: bool = False,
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
        if commit_timeout is not None:
            _require_positive("commit_timeout", commit_timeout)
        for name, count in (
            ("max_concurrent", max_concurrent),
            ("max_waiting_per_user", max_waiting_per_user),
        ):
            if count is not None and not (isinstance(count, int) and count >= 1):
                raise ConfigurationError(f"{name}={count!r} must be a whole number of at least 1")
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
        self._lock_ttl = lock_ttl
        self._commit_timeout = commit_timeout if commit_timeout is not None else lock_wait_timeout
        self._event_visit = event_visit
        # With the start node known, the declared flow is checked now: a deploy with a node
        # nobody can reach, or a target nobody registered, fails here and not for a user.
        self._graph = FlowGraph(nodes_dict, start_node) if start_node is not None else None
        if self._graph is not None:
            self._graph.check()
        self._strict_transitions = strict_transitions
        self._max_waiting = max_waiting_per_user
        self._slots = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        self._background: set[asyncio.Task[None]] = set()
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

    async def route(self, event: EventT) -> Outcome:
        """Handle one event: pass it to the user's node and store the node that comes next.

        A user without a stored node gets `get_start_node(event)`; its `on_enter` runs and
        this first event is not passed to `on_event`. An exception in `on_event` is logged
        and leaves the user where they were. What the nodes send through `after_commit`
        goes out only after the result is stored.

        Raises StateUnavailableError (nothing changed) when Redis can't be reached or the
        user's lock can't be had in time, UserBusyError (a StateUnavailableError) when the
        user has too many events waiting, and TransitionLostError when the node ran but its
        result could not be stored.
        """
        user_id = self._event_to_user_id(event)
        started = time.perf_counter()
        async with self._locked(user_id) as held:
            current = self._load(held)
            from_key = current.key if current else None
            outbox = Outbox()
            with collecting(outbox):
                outcome, next_node = await self._transition(user_id, event, current)
            if next_node is None:
                return outcome
            to_key = await self._commit(held, next_node)
            if outbox:
                await outbox.flush(user_id)
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
        return outcome

    async def _transition(
        self,
        user_id: UserIdT,
        event: EventT,
        current: Decoded[CtxT, EventT, UserIdT] | None,
    ) -> tuple[Outcome, Node[CtxT, EventT, UserIdT, Any] | None]:
        """Run the node code for one event; the node to store, or None to store nothing."""
        if current is None:
            start = self._get_start_node(event)
            await self._enter(start, user_id, visit=1)
            return Outcome.STARTED, start
        if self._event_visit is not None:
            visit = self._event_visit(event)
            if visit is not None and visit != current.visit:
                logger.debug(
                    "user %s: event of visit %s ignored, the user is on visit %s",
                    user_id,
                    visit,
                    current.visit,
                    extra={"user_id": user_id, "node": current.key},
                )
                return Outcome.STALE, None
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
            return Outcome.FAILED, None
        if returned is None:
            return Outcome.STAYED, current.node
        self._check_declared(current.key, returned)
        await self._enter(returned, user_id, visit=current.visit + 1)
        return Outcome.MOVED, returned

    def _check_declared(self, from_key: str, returned: Node[CtxT, EventT, UserIdT, Any]) -> None:
        """A transition the flow does not declare: an error in strict mode, else a warning."""
        if self._graph is None or self._graph.allows(from_key, type(returned)):
            return
        message = (
            f"node {from_key!r} returned {type(returned).__qualname__}, which the return "
            "annotation of its on_event does not declare"
        )
        if self._strict_transitions:
            raise UndeclaredTransitionError(message)
        logger.warning("%s", message, extra={"node": from_key})

    @property
    def graph(self) -> FlowGraph | None:
        """The declared flow (when `start_node` was given), e.g. to draw it."""
        return self._graph

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
            current = self._load(held, quiet=True)
            outbox = Outbox()
            with collecting(outbox):
                await self._enter(node, user_id, visit=(current.visit if current else 0) + 1)
            await self._commit(held, node)
            if outbox:
                await outbox.flush(user_id)

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
        if (
            self._max_waiting is not None
            and self._local_locks.waiting(user_id) >= self._max_waiting
        ):
            raise self._busy(user_id)
        self._in_flight += 1
        self._idle.clear()
        try:
            if not await self._local_locks.acquire(user_id, wait_seconds=self._lock_wait_timeout):
                raise self._lock_timeout(user_id)
            try:
                async with self._slot():
                    held = await self._lock_remote(user_id, started)
                    try:
                        yield held
                    finally:
                        self._stop_keepalive(held)
                        if not held.committed:
                            await self._release(held)
            finally:
                self._local_locks.release(user_id)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    def _slot(self) -> AbstractAsyncContextManager[Any]:
        """One of `max_concurrent` slots, taken only by an event whose user's turn it is."""
        return self._slots if self._slots is not None else contextlib.nullcontext()

    async def _lock_remote(self, user_id: UserIdT, started: float) -> _Held:
        token = f"{self._token_prefix}:{next(self._token_counter)}"
        deadline = started + self._lock_wait_timeout
        delay = 0.002
        while True:
            locked = await self._try_lock(user_id, token)
            now = time.perf_counter()
            if locked.taken:
                held = _Held(user_id=user_id, token=token, locked=locked, lock_wait=now - started)
                held.keepalive = asyncio.get_running_loop().call_later(
                    self._lock_ttl / 3, self._start_keepalive, held
                )
                return held
            if now >= deadline:
                raise self._lock_timeout(user_id)
            await asyncio.sleep(min(delay, deadline - now, max(locked.lock_left_ms, 1) / 1000))
            delay = min(delay * 2, _MAX_LOCK_POLL)

    async def _try_lock(self, user_id: UserIdT, token: str) -> Locked:
        """One try at the lock; a caller cancelled meanwhile still gets a taken lock released.

        The script runs in Redis whether or not its caller is still waiting, so the call is
        shielded and, if the caller is gone, a lock it took is handed back right away instead
        of blocking the user for `lock_ttl`.
        """
        try:
            return await self._store.try_lock_and_read(
                user_id, token, on_orphaned=lambda: self._release_orphan(user_id, token)
            )
        except RedisError as error:
            raise self._unavailable(user_id, error) from error

    def _release_orphan(self, user_id: UserIdT, token: str) -> None:
        held = _Held(user_id=user_id, token=token, locked=Locked(taken=True), lock_wait=0.0)
        task = asyncio.ensure_future(self._release(held))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _start_keepalive(self, held: _Held) -> None:
        """The handler runs long: keep its lock alive until it commits or releases."""
        held.keepalive = asyncio.ensure_future(self._keep_alive(held))

    async def _keep_alive(self, held: _Held) -> None:
        period = self._lock_ttl / 3
        while True:
            try:
                if not await self._store.extend_lock(held.user_id, held.token):
                    logger.warning(
                        "lock of user %s was lost while their event was handled",
                        held.user_id,
                        extra={"user_id": held.user_id},
                    )
                    return
            except RedisError as error:  # try again next period; the write is fenced anyway
                logger.warning(
                    "could not extend the lock of user %s: %s",
                    held.user_id,
                    error,
                    extra={"user_id": held.user_id},
                )
            await asyncio.sleep(period)

    @staticmethod
    def _stop_keepalive(held: _Held) -> None:
        if held.keepalive is not None:
            held.keepalive.cancel()
            held.keepalive = None

    def _load(self, held: _Held, *, quiet: bool = False) -> Decoded[CtxT, EventT, UserIdT] | None:
        """Decode the user's node; None means start over (a new user, or unreadable state).

        Whatever was stored, this logs one warning naming what was wrong and never raises.
        """
        locked = held.locked
        problems = [locked.repairs] if locked.repairs else []
        decoded = None
        if locked.value is not None:
            if locked.from_legacy:
                logger.info("moving user %s out of the botnodes 0.1.0 hash", held.user_id)
            try:
                decoded = self._codec.decode(locked.value)
            except CorruptStateError as error:
                problems.append(error.reason)
        if not problems or quiet:
            pass
        elif decoded is None and (locked.value is not None or "state key" in locked.repairs):
            reason = "; ".join(problems)
            self._notify(lambda: self._observer.reset(reason))
            logger.warning(
                "resetting user %s to the start node: %s",
                held.user_id,
                reason,
                extra={"user_id": held.user_id, "reason": reason},
            )
        else:
            reason = "; ".join(problems)
            logger.warning(
                "repaired the keys of user %s: %s",
                held.user_id,
                reason,
                extra={"user_id": held.user_id, "reason": reason},
            )
        if decoded is not None and decoded.upgraded and not quiet:
            logger.warning(
                "upgraded stored state of user %s: %s",
                held.user_id,
                decoded.upgraded,
                extra={"user_id": held.user_id},
            )
        return decoded

    async def _enter(
        self, node: Node[CtxT, EventT, UserIdT, Any], user_id: UserIdT, *, visit: int
    ) -> None:
        """Run on_enter; a failure is logged and the transition kept: on_event already acted."""
        node.visit = visit
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
        """Store the node, retrying while Redis is away: the write is safe to repeat.

        Raises TransitionLostError if it can't be stored within `commit_timeout`, or if
        another writer changed the user's state since it was read.
        """
        key = self._codec.key_of(node)
        value = self._codec.encode(node)
        self._stop_keepalive(held)
        deadline = time.perf_counter() + self._commit_timeout
        delay = 0.05
        while True:
            try:
                result = await self._store.write_and_unlock(
                    held.user_id,
                    held.token,
                    value,
                    read_digest=held.locked.read_digest,
                    forget_legacy=held.locked.from_legacy,
                )
                break
            except RedisError as error:
                self._notify(self._observer.redis_error)
                left = deadline - time.perf_counter()
                if left <= 0:
                    logger.error(
                        "could not store node %r of user %s: %s; the transition is lost",
                        key,
                        held.user_id,
                        error,
                        extra={"user_id": held.user_id, "node": key},
                    )
                    raise TransitionLostError(
                        f"node {key!r} of user {held.user_id} was not stored: {error}"
                    ) from error
                logger.warning(
                    "storing node %r of user %s failed (%s); retrying",
                    key,
                    held.user_id,
                    error,
                    extra={"user_id": held.user_id, "node": key},
                )
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, _MAX_COMMIT_BACKOFF)
        held.committed = True
        if result == REFUSED:
            logger.error(
                "state of user %s changed since it was read (another writer); node %r is "
                "not stored and this transition is dropped",
                held.user_id,
                key,
                extra={"user_id": held.user_id, "node": key},
            )
            raise TransitionLostError(
                f"node {key!r} of user {held.user_id} was not stored: another writer changed "
                "the state first"
            )
        if result == STORED_WITHOUT_LOCK:
            logger.warning(
                "lock of user %s expired before node %r was stored; stored anyway, since "
                "nobody changed the state meanwhile (raise lock_ttl if handlers run this long)",
                held.user_id,
                key,
                extra={"user_id": held.user_id, "node": key},
            )
        return key

    async def _release(self, held: _Held) -> None:
        try:
            await self._store.write_and_unlock(held.user_id, held.token, None, read_digest="")
        except RedisError as error:
            self._notify(self._observer.redis_error)
            logger.warning(
                "could not release the lock of user %s (%s); it expires by itself",
                held.user_id,
                error,
                extra={"user_id": held.user_id},
            )

    def _notify(self, call: Callable[[], None]) -> None:
        """Run an observer hook; a failing hook is logged, never passed on to routing."""
        try:
            call()
        except Exception:
            logger.exception("botnodes observer %r failed", self._observer)

    def _busy(self, user_id: UserIdT) -> UserBusyError:
        logger.warning(
            "user %s has %s events waiting already; this one is not processed",
            user_id,
            self._max_waiting,
            extra={"user_id": user_id},
        )
        return UserBusyError(f"user {user_id} has {self._max_waiting} events waiting already")

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

    async def forget(self) -> None:
        """Delete the user's stored node, under their lock: their next event starts over."""
        async with self._nodes._locked(self._user_id):
            try:
                await self._nodes._store.forget(self._user_id)
            except RedisError as error:
                raise self._nodes._unavailable(self._user_id, error) from error

    async def get_node(self) -> Node[CtxT, EventT, UserIdT, Any] | None:
        """The user's current node, or None if they have none (or it can't be read)."""
        return await self._nodes._get(self._user_id)


def _require_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0 < value <= MAX_TTL_SECONDS):
        raise ConfigurationError(
            f"{name}={value!r} must be a positive number of seconds, at most {MAX_TTL_SECONDS:g} "
            "(the longest expiry Redis takes)"
        )
