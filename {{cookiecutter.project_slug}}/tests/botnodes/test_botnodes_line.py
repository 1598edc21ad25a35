"""A user's events waiting in several processes take the lock in the user's order (line.py).

Two `Nodes` over one Redis stand in for two replicas; each event's place in the order (what
the runtime takes from Telegram's `update_id`) is a context variable set in the event's own
task, as the runtime's dispatcher sets it.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

from redis.asyncio import Redis

from botnodes import Nodes, Outcome
from botnodes.line import LINE_TTL_MS

from .botnodes_support import Cart, Ctx, Msg, make_nodes

_order: ContextVar[int | None] = ContextVar("order", default=None)


def replica(redis: Redis, state_key: str, ctx: Ctx, **options: object) -> Nodes[Ctx, Msg, int]:
    return make_nodes(redis, state_key, ctx, arrival_order=_order.get, **options)


async def route_as(nodes: Nodes[Ctx, Msg, int], order: int, text: str) -> Outcome:
    """Route `text` as the update numbered `order` (run as a task: the variable is its own)."""
    _order.set(order)
    return await nodes.route(Msg(1, text, event_id=f"m{order}"))


async def cart(nodes: Nodes[Ctx, Msg, int]) -> list[str]:
    node = await nodes.user(1).get_node()
    assert isinstance(node, Cart), node
    return list(node._data.items)


async def test_events_waiting_in_two_processes_run_in_the_users_order(
    redis_client: Redis, state_key: str
) -> None:
    gate = asyncio.Event()
    ctx = Ctx(gate=gate)
    first, second = replica(redis_client, state_key, ctx), replica(redis_client, state_key, ctx)
    await first.user(1).to(Cart())
    # Update 1 holds the lock in the first replica; 2 to 9 arrive alternately at both, so each
    # replica has its own queue of them and its first one polls the Redis lock.
    held = asyncio.create_task(route_as(first, 1, "item1"))
    async with asyncio.timeout(5):
        await ctx.at_gate.wait()
    waiting = []
    for order in range(2, 10):
        where = (second, first)[order % 2]
        waiting.append(asyncio.create_task(route_as(where, order, f"item{order}")))
        await asyncio.sleep(0.01)
    gate.set()
    assert await held == Outcome.STAYED
    assert await asyncio.gather(*waiting) == [Outcome.STAYED] * 8
    assert await cart(first) == [f"item{order}" for order in range(1, 10)]
    # The line and the lock are gone with the last waiter: an idle user costs no key.
    assert await redis_client.exists(f"{state_key}:{{1}}:line", f"{state_key}:{{1}}:lock") == 0


async def test_a_waiter_that_is_gone_holds_the_line_up_for_line_ttl_at_most(
    redis_client: Redis, state_key: str
) -> None:
    gate = asyncio.Event()
    ctx = Ctx(gate=gate)
    first = replica(redis_client, state_key, ctx, lock_wait_timeout=0.3)
    second = replica(redis_client, state_key, ctx, lock_wait_timeout=0.3)
    await first.user(1).to(Cart())
    held = asyncio.create_task(route_as(first, 1, "item1"))
    async with asyncio.timeout(5):
        await ctx.at_gate.wait()
    gone = asyncio.create_task(route_as(second, 2, "item2"))
    line = f"{state_key}:{{1}}:line"
    async with asyncio.timeout(5):
        while not await redis_client.exists(line):  # noqa: ASYNC110 - update 2 waits in the line
            await asyncio.sleep(0.01)
    gone.cancel()  # its replica gave up on it (a request cut off, a process killed)
    gate.set()
    assert await held == Outcome.STAYED
    # The lock was left reserved for update 2, which never comes for it.
    assert await redis_client.get(f"{state_key}:{{1}}:lock") == b"=2"
    # Update 3 waits for the reservation to lapse, longer than lock_wait_timeout (it is no
    # holder's fault), and is served, not refused.
    async with asyncio.timeout(LINE_TTL_MS / 1000 + 5):
        assert await asyncio.create_task(route_as(first, 3, "item3")) == Outcome.STAYED
    assert await cart(first) == ["item1", "item3"]
