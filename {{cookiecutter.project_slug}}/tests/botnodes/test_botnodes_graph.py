"""The flow botnodes reads from `on_event` return annotations: checks, strictness, Mermaid."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from botnodes import ByTimer, ConfigurationError, FlowGraph, Node, UndeclaredTransitionError
from botnodes.graph import declared_transitions

from .botnodes_support import Ctx, Msg, make_nodes


class Empty(BaseModel):
    pass


class Base(Node[Ctx, Msg, int, Empty]):
    def __init__(self) -> None:
        self._data = Empty()


class Home(Base):
    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> Shop | Done | None:
        if event.text == "shop":
            return Shop()
        if event.text == "sneak":
            return Hidden()  # type: ignore[return-value]  # deliberately not declared
        return Done() if event.text == "done" else None


class Shop(Base):
    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> Home | Shop | Hidden:
        if event.text == "hide":
            return Hidden()
        return Home() if event.text == "back" else Shop()


class Done(Base):
    final: ClassVar[bool] = True

    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> None:
        return None


class Hidden(Base):
    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> Home:
        return Home()


class Broad(Base):
    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> Node[Ctx, Msg, int, Any] | None:
        return None


class Stuck(Base):
    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> Stuck | None:
        return None


class Lonely(Base):
    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> Home:
        return Home()


class Waiting(Base):
    """Two timers, each marked with where it leads: each edge gets its own setting."""

    timeout_labels: ClassVar[Mapping[str, str]] = {"nudge": "NUDGE_AFTER", "give_up": "GIVE_UP"}

    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> Home | None:
        return None

    async def on_timeout(
        self, user_id: int, name: str, ctx: Ctx
    ) -> Annotated[Home, ByTimer("give_up")] | Annotated[None, ByTimer("nudge", "ping")]:
        return Home() if name == "give_up" else None


class WaitingUnmarked(Waiting):
    """The same timers with a bare annotation: any of them may lead to either target."""

    async def on_timeout(self, user_id: int, name: str, ctx: Ctx) -> Home | None:
        return Home() if name == "give_up" else None


FLOW: dict[str, type[Node[Ctx, Msg, int, Any]]] = {
    "home": Home,
    "shop": Shop,
    "done": Done,
    "hidden": Hidden,
}


def test_annotations_declare_targets_and_staying() -> None:
    home = declared_transitions(Home)
    assert home is not None
    assert home.targets == {Shop, Done}
    assert home.stays
    assert declared_transitions(Broad) is None


def test_a_sound_flow_has_no_problems_and_draws_as_mermaid() -> None:
    graph = FlowGraph(FLOW, Home)
    assert graph.problems() == []
    assert graph.mermaid() == (
        "stateDiagram-v2\n"
        "    [*] --> home\n"
        "    home --> done\n"
        "    home --> shop\n"
        "    home --> home : stays\n"
        "    shop --> hidden\n"
        "    shop --> home\n"
        "    shop --> shop\n"
        "    done --> done : stays\n"
        "    done --> [*]\n"
        "    hidden --> home\n"
    )


def test_each_timeout_edge_is_labelled_with_the_setting_of_the_timer_that_takes_it() -> None:
    graph = FlowGraph({"home": Home, "shop": Shop, "done": Done, "waiting": Waiting}, Waiting)
    timer_edges = [line for line in graph.mermaid().splitlines() if ": after" in line]
    # A timer without a label (`ping`) is named by itself rather than left out.
    assert timer_edges == [
        "    waiting --> waiting : after NUDGE_AFTER, ping",
        "    waiting --> home : after GIVE_UP",
    ]
    declared = declared_transitions(Waiting, "on_timeout")
    assert declared is not None
    assert declared.targets == {Home}
    assert declared.stays


def test_an_unmarked_timeout_annotation_labels_every_edge_with_every_setting() -> None:
    graph = FlowGraph({"home": Home, "waiting": WaitingUnmarked}, WaitingUnmarked)
    timer_edges = [line for line in graph.mermaid().splitlines() if ": after" in line]
    assert timer_edges == [
        "    waiting --> waiting : after NUDGE_AFTER, GIVE_UP",
        "    waiting --> home : after NUDGE_AFTER, GIVE_UP",
    ]


def test_by_timer_needs_a_timer_name() -> None:
    with pytest.raises(ConfigurationError, match=r"^ByTimer\(\) needs the name of at least one"):
        ByTimer()


@pytest.mark.parametrize(
    ("flow", "problem"),
    [
        (
            {"home": Home, "shop": Shop, "hidden": Hidden},
            "node 'home' may return Done, which is not in nodes_dict",
        ),
        (
            {**FLOW, "lonely": Lonely},
            "node 'lonely' can't be reached from the start node: add Lonely to the return "
            "annotation of the on_event of a node that leads there, e.g. "
            "`Home.on_event(...) -> ... | Lonely`",
        ),
        ({**FLOW, "stuck": Stuck}, "node 'stuck' is a dead end"),
        ({**FLOW, "broad": Broad}, "node 'broad' declares no transitions"),
        ({"shop": Shop, "hidden": Hidden}, "the start node Home is not in nodes_dict"),
    ],
    ids=["unregistered-target", "unreachable", "dead-end", "undeclared", "start-missing"],
)
def test_a_broken_flow_is_refused_when_nodes_is_built(
    redis_client: Redis, state_key: str, flow: dict[str, Any], problem: str
) -> None:
    assert any(p.startswith(problem) for p in FlowGraph(flow, Home).problems())
    with pytest.raises(ConfigurationError, match=r"^(node|the start)"):
        make_nodes(redis_client, state_key, nodes_dict=flow, start_node=Home)


def make_flow_nodes(redis: Redis, prefix: str, *, strict: bool) -> Any:
    return make_nodes(
        redis,
        prefix,
        nodes_dict=FLOW,
        get_start_node=lambda event: Home(),
        start_node=Home,
        strict_transitions=strict,
    )


async def test_strict_mode_fails_loudly_on_an_undeclared_transition(
    redis_client: Redis, state_key: str
) -> None:
    nodes = make_flow_nodes(redis_client, state_key, strict=True)
    await nodes.route(Msg(1, "hi"))
    assert (await nodes.route(Msg(1, "shop"))).value == "moved"  # declared: fine
    await nodes.route(Msg(1, "back"))
    with pytest.raises(UndeclaredTransitionError, match="node 'home' returned Hidden"):
        await nodes.route(Msg(1, "sneak"))
    assert isinstance(await nodes.user(1).get_node(), Home)  # nothing was stored
    assert await redis_client.exists(f"{state_key}:{{1}}:lock") == 0


async def test_without_strict_mode_an_undeclared_transition_is_logged_and_kept(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = make_flow_nodes(redis_client, state_key, strict=False)
    await nodes.route(Msg(1, "hi"))
    with caplog.at_level(logging.WARNING):
        await nodes.route(Msg(1, "sneak"))
    assert isinstance(await nodes.user(1).get_node(), Hidden)
    assert "node 'home' returned Hidden, which the return annotation" in caplog.text
