"""What the timer tests share: a clock the test moves, the nodes `Ask` and `Done`, an
observer that counts, the fixtures and a look at the schedule. The tests are
test_botnodes_timers.py (when a timer fires) and test_botnodes_timer_claims.py (claims,
replicas, storage, cost, a cluster).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from botnodes import Node, Nodes, NodesObserver, after_commit

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
