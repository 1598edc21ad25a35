"""Timers (botnodes/timers.py): a node acts when its user goes quiet, once, in one process.

Every test runs against a real Redis; time is a clock the test moves, and `fire_due` is what
each process's `run_timers` loop calls, so firing is deterministic and nothing sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from botnodes import Node, Nodes, NodesObserver, after_commit
from botnodes.timers import PendingTimers, placement

from .botnodes_support import stored_json

START = 1_800_000_000.0  # the test clock's "now" when a test begins


@dataclass
class Clock:
    """The time the test says it is."""

    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Ctx:
    sent: list[tuple[int, str]] = field(default_factory=list)
    nudge_after: float = 60.0
    give_up_after: float = 300.0
    #: Set whenever a reply goes out.
    replied: asyncio.Event = field(default_factory=asyncio.Event)

    async def reply(self, user_id: int, text: str) -> None:
        async def send() -> None:
            self.sent.append((user_id, text))
            self.replied.set()

        await after_commit(send)

    def texts(self, user_id: int) -> list[str]:
        return [text for uid, text in self.sent if uid == user_id]


@dataclass(frozen=True)
class Msg:
    user_id: int
    text: str


class AskModel(BaseModel):
    answers: list[str] = []
    nudged: bool = False


class Ask(Node[Ctx, Msg, int, AskModel]):
    """Asks a question; nudges once if unanswered, gives up later."""

    timeout_labels: ClassVar[Mapping[str, str]] = {"nudge": "NUDGE", "give_up": "GIVE_UP"}

    def __init__(self) -> None:
        self._data = AskModel()

    async def on_enter(self, user_id: int, ctx: Ctx) -> None:
        await ctx.reply(user_id, "question?")

    def timeouts(self, ctx: Ctx) -> Mapping[str, float]:
        nudge = 0.0 if self._data.nudged else ctx.nudge_after
        return {"nudge": nudge, "give_up": ctx.give_up_after}

    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> Done | None:
        if event.text == "done":
            return Done()
        self._data.answers.append(event.text)
        return None

    async def on_timeout(self, user_id: int, name: str, ctx: Ctx) -> Done | None:
        if name == "give_up":
            await ctx.reply(user_id, "bye")
            return Done()
        if "boom" in self._data.answers:
            self._data.answers.append("changed by a failing on_timeout")
            await ctx.reply(user_id, "never sent")
            raise RuntimeError("nudge exploded")
        self._data.nudged = True
        await ctx.reply(user_id, "still there?")
        return None


class Empty(BaseModel):
    pass


class Done(Node[Ctx, Msg, int, Empty]):
    """No timers: leaving `Ask` cancels its timers."""

    def __init__(self) -> None:
        self._data = Empty()

    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> Ask:
        return Ask()


NODES: dict[str, type[Node[Ctx, Msg, int, Any]]] = {"ask": Ask, "done": Done}


@dataclass
class Counted(NodesObserver):
    scheduled: list[tuple[str, str]] = field(default_factory=list)
    cancelled: list[tuple[str, str]] = field(default_factory=list)
    fired: list[tuple[str, str, float]] = field(default_factory=list)

    def timer_scheduled(self, node: str, name: str) -> None:
        self.scheduled.append((node, name))

    def timer_cancelled(self, node: str, name: str) -> None:
        self.cancelled.append((node, name))

    def timer_fired(self, node: str, name: str, lateness: float) -> None:
        self.fired.append((node, name, lateness))


def make(
    redis: Redis | RedisCluster,
    prefix: str,
    ctx: Ctx,
    clock: Callable[[], float],
    **options: Any,
) -> Nodes[Ctx, Msg, int]:
    return Nodes(
        redis_client=redis,
        redis_property_name=prefix,
        nodes_dict=NODES,
        discriminator_field="node_name",
        get_start_node=lambda event: Ask(),
        ctx=ctx,
        event_to_user_id=lambda event: event.user_id,
        start_node=Ask,
        clock=clock,
        **options,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ctx() -> Ctx:
    return Ctx()


@pytest.fixture
def nodes(redis_client: Redis, state_key: str, ctx: Ctx, clock: Clock) -> Nodes[Ctx, Msg, int]:
    return make(redis_client, state_key, ctx, clock)


async def advance(nodes: Nodes[Ctx, Msg, int], clock: Clock, seconds: float) -> None:
    clock.now += seconds
    while await nodes.fire_due():
        pass


async def schedule(redis: Redis, prefix: str) -> dict[str, float]:
    """Every shard's members and scores, as the poller sees them."""
    found: dict[str, float] = {}
    for shard in range(8):
        key = f"{prefix}:timers:{{t{shard}}}"
        entries: Any = await redis.zrange(key, 0, -1, withscores=True)
        found.update((member.decode(), float(score)) for member, score in entries)
    return found


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


async def test_replicas_fire_each_timer_exactly_once(
    redis_client: Redis, state_key: str, clock: Clock
) -> None:
    contexts = [Ctx(), Ctx(), Ctx()]
    replicas = [make(redis_client, state_key, ctx, clock) for ctx in contexts]
    users = range(1, 41)
    for user_id in users:
        await replicas[user_id % 3].route(Msg(user_id, "hi"))
    clock.now += 61
    for _ in range(3):
        await asyncio.gather(*(replica.fire_due() for replica in replicas))
    sent = [text for ctx in contexts for _, text in ctx.sent if text == "still there?"]
    assert len(sent) == len(users)
    for user_id in users:
        nudges = sum(ctx.texts(user_id).count("still there?") for ctx in contexts)
        assert nudges == 1, f"user {user_id} was nudged {nudges} times"


async def test_a_claim_of_a_process_that_died_fires_again_after_the_claim_ttl(
    redis_client: Redis, state_key: str, clock: Clock, ctx: Ctx
) -> None:
    dead = make(redis_client, state_key, Ctx(), clock, timer_claim_ttl=30)
    alive = make(redis_client, state_key, ctx, clock, timer_claim_ttl=30)
    await alive.route(Msg(1, "hi"))
    clock.now += 61
    # The dead process claimed the user and was killed before firing:
    claimed = await dead._timers.claim(round(clock.now * 1000), 30_000, 100)
    assert claimed == [(1, round((START + 60) * 1000))]
    assert await alive.fire_due() == 0
    clock.now += 30
    assert await alive.fire_due() == 1
    assert ctx.texts(1) == ["question?", "still there?"]
    assert await alive.fire_due(clock.now + 1) == 0  # the firing is stored: nothing twice


async def test_a_second_firing_of_the_same_timer_is_a_no_op(
    nodes: Nodes[Ctx, Msg, int], ctx: Ctx, clock: Clock, redis_client: Redis, state_key: str
) -> None:
    await nodes.route(Msg(1, "hi"))
    clock.now += 61
    await nodes.fire_due()
    # As if a process that fired it too, but slower, now got the user's lock:
    assert await nodes._fire(1) is None
    assert ctx.texts(1) == ["question?", "still there?"]


async def test_a_failing_on_timeout_drops_its_timer_data_and_replies_and_keeps_the_others(
    nodes: Nodes[Ctx, Msg, int], ctx: Ctx, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    await nodes.route(Msg(1, "hi"))
    await nodes.route(Msg(1, "boom"))
    await advance(nodes, clock, 61)
    assert "nudge exploded" in caplog.text
    node = await nodes.user(1).get_node()
    assert isinstance(node, Ask)
    assert node._data.answers == ["boom"]
    assert ctx.texts(1) == ["question?"]
    await advance(nodes, clock, 240)
    assert ctx.texts(1) == ["question?", "bye"]


async def test_timers_are_stored_with_the_node_and_counted(
    redis_client: Redis, state_key: str, ctx: Ctx, clock: Clock
) -> None:
    observer = Counted()
    nodes = make(redis_client, state_key, ctx, clock, observer=observer)
    await nodes.route(Msg(1, "hi"))
    stored = await stored_json(redis_client, f"{state_key}:{{1}}")
    armed = round(START * 1000)
    assert stored["_t"] == {
        "at": armed,
        "due": {"nudge": armed + 60_000, "give_up": armed + 300_000},
        "s": armed + 60_000,  # the schedule's score for the user: see the lazy tests above
    }
    assert observer.scheduled == [("ask", "nudge"), ("ask", "give_up")]
    clock.now += 10
    await nodes.route(Msg(1, "x"))
    assert observer.cancelled == [("ask", "nudge"), ("ask", "give_up")]
    clock.now += 60.5
    await nodes.fire_due()
    [(node, name, lateness)] = observer.fired
    assert (node, name) == ("ask", "nudge")
    assert lateness == pytest.approx(0.5)
    assert len(observer.cancelled) == 2  # the fired timer is not "cancelled"


async def test_off_timeouts_arm_nothing_and_cost_no_command(
    redis_client: Redis, state_key: str, clock: Clock
) -> None:
    ctx = Ctx(nudge_after=0, give_up_after=0)
    nodes = make(redis_client, state_key, ctx, clock)
    await nodes.route(Msg(1, "hi"))
    before = await evalsha_calls(redis_client)
    await nodes.route(Msg(1, "an answer"))
    assert await evalsha_calls(redis_client) - before == 2  # lock and read, write and unlock
    assert "_t" not in await stored_json(redis_client, f"{state_key}:{{1}}")
    assert await schedule(redis_client, state_key) == {}


async def test_a_step_with_timers_costs_no_script_call_of_its_own(
    nodes: Nodes[Ctx, Msg, int], redis_client: Redis, state_key: str
) -> None:
    # The commit script reschedules the timers itself: a step that arms them runs the same
    # two scripts (lock-and-read, commit) as a step that arms none.
    await nodes.route(Msg(1, "hi"))
    before = await evalsha_calls(redis_client)
    await nodes.route(Msg(1, "an answer"))  # re-arms the node's timer
    assert await evalsha_calls(redis_client) - before == 2
    assert list(await schedule(redis_client, state_key)) == ["1"]  # and it is scheduled


async def evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_run_timers_fires_within_a_second_on_the_real_clock(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx(nudge_after=0.3)
    observer = Counted()
    nodes = make(redis_client, state_key, ctx, time.time, observer=observer)
    poller = asyncio.create_task(nodes.run_timers())
    try:
        await nodes.route(Msg(1, "hi"))
        ctx.replied.clear()
        async with asyncio.timeout(1.3):
            await ctx.replied.wait()
    finally:
        poller.cancel()
    assert ctx.texts(1) == ["question?", "still there?"]
    assert 0 <= observer.fired[0][2] < 1.0


async def test_timers_work_on_a_redis_cluster(
    redis_cluster_url: str, state_key: str, clock: Clock
) -> None:
    cluster = RedisCluster.from_url(redis_cluster_url)
    try:
        await timers_on_the_cluster(cluster, state_key, clock)
    finally:
        await cluster.aclose()


async def timers_on_the_cluster(cluster: RedisCluster, state_key: str, clock: Clock) -> None:
    """Replicas share users spread over the shards' slots; each nudge goes out once."""
    contexts = [Ctx(), Ctx()]
    replicas = [make(cluster, state_key, ctx, clock) for ctx in contexts]
    for user_id in range(20):
        await replicas[user_id % 2].route(Msg(user_id, "hi"))
    await replicas[0].route(Msg(3, "done"))  # its entry is left, dropped when it falls due
    clock.now += 30
    await replicas[1].route(Msg(4, "an answer"))  # nudge at +90: its entry wakes early
    clock.now += 31
    await asyncio.gather(*(replica.fire_due() for replica in replicas))
    for user_id in range(20):
        nudges = sum(ctx.texts(user_id).count("still there?") for ctx in contexts)
        assert nudges == (0 if user_id in (3, 4) else 1)
    assert await cluster.zscore(replicas[0]._timers.key_of("3"), "3") is None
    assert await cluster.zscore(replicas[0]._timers.key_of("4"), "4") == (START + 90) * 1000
    clock.now += 30
    await asyncio.gather(*(replica.fire_due() for replica in replicas))
    assert sum(ctx.texts(4).count("still there?") for ctx in contexts) == 1
    shard_slots = {await cluster.cluster_keyslot(f"{state_key}:timers:{{t{s}}}") for s in range(8)}
    assert len(shard_slots) == 8
