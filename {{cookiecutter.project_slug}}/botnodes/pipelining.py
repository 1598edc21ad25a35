"""Script calls of concurrent events, sent together: many users' events, one round trip.

redis-py pays a fixed cost per command (a pool checkout, a socket write and read, reply
parsing). With many users active, each event's two scripts would pay it separately. Instead,
calls made while the event loop runs other handlers are queued and sent as one pipeline on the
loop's next turn, the way ioredis' auto-pipelining and Lettuce do it. A single user's calls
are sequential (their events run one at a time), so batching never reorders one user's work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

Arg = str | int | bytes


def _encode(arg: Arg) -> bytes:
    """The bytes redis-py would send for `arg` (UTF-8, strict), or UnicodeEncodeError now."""
    if isinstance(arg, bytes):
        return arg
    return str(arg).encode()


@dataclass(slots=True)
class _Call:
    script: AsyncScript
    keys: Sequence[bytes]
    args: Sequence[bytes]
    future: asyncio.Future[Any]
    orphaned: Callable[[Any], None] | None


class ScriptPipeline:
    """Runs registered scripts, batching the calls of one event-loop turn into one pipeline."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queue: list[_Call] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def __call__(
        self,
        script: AsyncScript,
        keys: Sequence[str],
        args: Sequence[Arg],
        *,
        orphaned: Callable[[Any], None] | None = None,
    ) -> Any:
        """Run the script in the next batch; its result, or its error.

        A call still runs in Redis if its caller is cancelled meanwhile (it may be on the wire
        already); `orphaned` then gets the result, so the caller can undo what it did.
        """
        # Encode here, in the caller's own frame: a value redis-py could not encode (a lone
        # surrogate, say) then fails this call alone instead of the whole batch it joins.
        encoded_keys = [_encode(key) for key in keys]
        encoded_args = [_encode(arg) for arg in args]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(script, encoded_keys, encoded_args, future, orphaned))
        if len(self._queue) == 1:  # the first call of this turn schedules the send
            flush = asyncio.create_task(self._flush())
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        return await future

    async def _flush(self) -> None:
        batch, self._queue = self._queue, []
        pipe = self._redis.pipeline(transaction=False)
        for call in batch:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as error:  # the connection failed: every call of the batch did
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(error)
            return
        except BaseException:  # cancelled (the loop is shutting down): so are the callers
            for call in batch:
                call.future.cancel()
            raise
        for call, result in zip(batch, results, strict=True):
            if call.future.done():  # the caller was cancelled meanwhile
                if call.orphaned is not None and not isinstance(result, Exception):
                    call.orphaned(result)
                continue
            if isinstance(result, NoScriptError):
                # Redis lost its script cache (a restart, SCRIPT FLUSH): load and run directly.
                await self._run_alone(call)
            elif isinstance(result, Exception):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)

    @staticmethod
    async def _run_alone(call: _Call) -> None:
        try:
            call.future.set_result(await call.script(keys=call.keys, args=call.args))
        except Exception as error:
            if not call.future.done():
                call.future.set_exception(error)
