"""Timers (botnodes/timers.py): a node acts when its user goes quiet, once, in one process.

Every test runs against a real Redis; time is a clock the test moves, and `fire_due` is what
each process's `run_timers` loop calls, so firing is deterministic and nothing sleeps.
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from botnodes import Nodes
from botnodes.timers import PendingTimers, placement

from .botnodes_support import stored_json
from .timers_support import (
    START,
    Clock,
    Counted,
    Ctx,
    Done,
    Msg,
    advance,
    clock,
    ctx,
    make,
    nodes,
    schedule,
)

__all__ = ["clock", "ctx", "nodes"]  # the fixtures, from timers_support.py


async def test_a_timer_fires_once_when_due_and_the_next_one_later(
    nodes: Nodes[Ctx, Msg, int], ctx: Ctx, clock: Clock
) -> None:
    await nodes.route(Msg(1, "hi"))  # starts on Ask: nudge at +60 s, give up at +300 s
    await advance(nodes, clock, 59.9)
    assert ctx.texts(1) == ["question?"]
    await advance(nodes, clock, 0.2)
    assert ctx.texts(1) == ["question?", "still there?"]
    await advance(nodes, clock, 200)  # the nudge is not armed again (nudged)
    assert ctx.texts(1) == ["question?", "still there?"]
    await advance(nodes, clock, 40)
    assert ctx.texts(1) == ["question?", "still there?", "bye"]
    assert isinstance(await nodes.user(1).get_node(), Done)


async def test_an_event_replaces_the_timers_and_a_stay_keeps_the_remaining_ones(
    nodes: Nodes[Ctx, Msg, int], ctx: Ctx, clock: Clock
) -> None:
    await nodes.route(Msg(1, "hi"))
    await advance(nodes, clock, 59)
    await nodes.route(Msg(1, "an answer"))  # just before the deadline: counted from now
    await advance(nodes, clock, 59)
    assert ctx.texts(1) == ["question?"]
    await advance(nodes, clock, 2)
    assert ctx.texts(1) == ["question?", "still there?"]
    # give_up still counts from the last event (59 + 300), not from the nudge
    await advance(nodes, clock, 300 - 61 - 1)
    assert ctx.texts(1)[-1] == "still there?"
    await advance(nodes, clock, 2)
    assert ctx.texts(1)[-1] == "bye"


async def test_leaving_the_node_cancels_its_timers_and_its_stale_entry_is_dropped_unfired(
    nodes: Nodes[Ctx, Msg, int],
    ctx: Ctx,
    clock: Clock,
    redis_client: Redis,
    state_key: str,
) -> None:
    await nodes.route(Msg(1, "hi"))
    assert await schedule(redis_client, state_key) == {"1": (START + 60) * 1000}
    await nodes.route(Msg(1, "done"))  # no timer left; the lazy schedule is not touched
    assert "_t" not in await stored_json(redis_client, f"{state_key}:{{1}}")
    assert await schedule(redis_client, state_key) == {"1": (START + 60) * 1000}
    clock.now += 60
    assert await nodes.fire_due() == 1  # the stale entry is looked at once, fires nothing
    assert await schedule(redis_client, state_key) == {}  # and is dropped
    await advance(nodes, clock, 1000)
    assert ctx.texts(1) == ["question?"]
    assert isinstance(await nodes.user(1).get_node(), Done)


async def test_an_entry_woken_early_is_set_to_the_real_due_time_and_fires_once_then(
    redis_client: Redis, state_key: str, ctx: Ctx, clock: Clock
) -> None:
    observer = Counted()
    nodes = make(redis_client, state_key, ctx, clock, observer=observer)
    await nodes.route(Msg(1, "hi"))  # nudge due at +60: scheduled
    clock.now += 50
    before = await redis_client.info("commandstats")
    await nodes.route(Msg(1, "an answer"))  # nudge now due at +110: later, schedule untouched
    after = await redis_client.info("commandstats")
    for command in ("cmdstat_zadd", "cmdstat_zrem"):
        assert after.get(command, {}).get("calls", 0) == before.get(command, {}).get("calls", 0)
    assert await schedule(redis_client, state_key) == {"1": (START + 60) * 1000}
    assert (await stored_json(redis_client, f"{state_key}:{{1}}"))["_t"]["s"] == (
        (START + 60) * 1000
    )
    clock.now = START + 60
    assert await nodes.fire_due() == 1  # woken early: nothing fires...
    assert ctx.texts(1) == ["question?"]
    # ...and the entry is set to the real due time, stored with the timers for the next step
    assert await schedule(redis_client, state_key) == {"1": (START + 110) * 1000}
    assert (await stored_json(redis_client, f"{state_key}:{{1}}"))["_t"]["s"] == (
        (START + 110) * 1000
    )
    assert await nodes.fire_due(START + 109.999) == 0
    clock.now = START + 110.25
    assert await nodes.fire_due() == 1
    assert ctx.texts(1) == ["question?", "still there?"]
    [(node, name, lateness)] = observer.fired
    assert (node, name) == ("ask", "nudge")
    assert lateness == pytest.approx(0.25)  # late by the look, not by the early wake
    # give_up (+350 from the answer) is scheduled exactly by the firing's own step
    assert await schedule(redis_client, state_key) == {"1": (START + 350) * 1000}
    await advance(nodes, clock, 200)
    assert ctx.texts(1) == ["question?", "still there?"]


async def test_an_earlier_timer_moves_the_lazy_entry_forward(
    redis_client: Redis, state_key: str, clock: Clock
) -> None:
    ctx = Ctx(nudge_after=0)  # only give_up, at +300
    nodes = make(redis_client, state_key, ctx, clock)
    await nodes.route(Msg(1, "hi"))
    assert await schedule(redis_client, state_key) == {"1": (START + 300) * 1000}
    ctx.nudge_after = 60  # the next step arms a timer due before what the schedule holds
    clock.now += 10
    await nodes.route(Msg(1, "an answer"))
    assert await schedule(redis_client, state_key) == {"1": (START + 70) * 1000}
    await advance(nodes, clock, 60)
    assert ctx.texts(1) == ["question?", "still there?"]


def test_a_step_sets_the_schedule_only_for_a_timer_due_earlier_than_it_holds() -> None:
    held = PendingTimers(0, {"a": 100}, scheduled_ms=100)
    later, earlier = PendingTimers(5, {"a": 105}), PendingTimers(5, {"a": 90})
    assert placement(later, held, exact=False) == (PendingTimers(5, {"a": 105}, 100), False)
    assert placement(earlier, held, exact=False) == (PendingTimers(5, {"a": 90}, 90), True)
    assert placement(later, None, exact=False) == (PendingTimers(5, {"a": 105}, 105), True)
    unknown = PendingTimers(0, {"a": 100})  # stored by a version before lazy scheduling
    assert placement(later, unknown, exact=False) == (PendingTimers(5, {"a": 105}, 105), True)
    assert placement(PendingTimers(5), held, exact=False) == (PendingTimers(5), False)
    # A timer's own step (its claim moved the score) sets the truth, later or none.
    assert placement(later, held, exact=True) == (PendingTimers(5, {"a": 105}, 105), True)
    assert placement(PendingTimers(5), held, exact=True) == (PendingTimers(5), True)
    # Stored and read back; a missing or unreadable score is "not known".
    assert PendingTimers.from_json(held.to_json()) == held
    assert PendingTimers.from_json({"at": 0, "due": {"a": 1}, "s": "x"}).scheduled_ms is None


async def test_a_timer_of_a_past_visit_never_fires(
    nodes: Nodes[Ctx, Msg, int], ctx: Ctx, clock: Clock
) -> None:
    await nodes.route(Msg(1, "hi"))  # visit 1 of Ask: nudge due at +60
    await advance(nodes, clock, 30)
    await nodes.route(Msg(1, "done"))
    await nodes.route(Msg(1, "back"))  # Ask again, a new visit: nudge due at +90
    await advance(nodes, clock, 31)
    assert ctx.texts(1) == ["question?", "question?"]
    await advance(nodes, clock, 30)
    assert ctx.texts(1) == ["question?", "question?", "still there?"]


async def test_a_stale_look_fires_nothing_and_reschedules_to_the_truth(
    nodes: Nodes[Ctx, Msg, int],
    ctx: Ctx,
    clock: Clock,
    redis_client: Redis,
    state_key: str,
) -> None:
    await nodes.route(Msg(1, "hi"))
    shard_key = nodes._timers.key_of("1")
    assert await redis_client.zscore(shard_key, "1") == (START + 60) * 1000
    await redis_client.zadd(shard_key, {"1": 0})  # a schedule that says "look now"
    await redis_client.zadd(nodes._timers.key_of("2"), {"2": 0})  # a user without state
    assert await nodes.fire_due() == 2
    assert ctx.texts(1) == ["question?"]
    assert await schedule(redis_client, state_key) == {"1": (START + 60) * 1000}
