"""What botnodes promises about replies and buttons: replies go out only after the step is
stored and never repeat an effect, and a press on an old visit's button runs no node code.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis

from botnodes import Outcome, after_commit

from .botnodes_support import (
    Checkout,
    Ctx,
    Menu,
    Msg,
    make_nodes,
    visit_of,
)

# 6. Replies after commit: an effect never repeats because a reply failed --------------------


async def test_replies_go_out_only_after_the_transition_is_stored(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx)
    await nodes.route(Msg(1, "hi"))
    await nodes.route(Msg(1, "checkout"))
    stored_when_sent: list[Any] = []
    original = ctx.say

    def say(user_id: int, text: str) -> None:
        if text.startswith("pa"):  # "paying" and "paid" are held until after commit
            stored_when_sent.append(redis_client.get(f"{state_key}:{{1}}"))
        original(user_id, text)

    ctx.say = say  # type: ignore[method-assign]
    await nodes.route(Msg(1, "pay"))
    values = [json.loads(await pending) for pending in stored_when_sent]
    assert [value["node_name"] for value in values] == ["menu", "menu"]


async def test_a_reply_that_fails_after_the_effect_does_not_undo_or_repeat_it(
    redis_client: Redis, state_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = Ctx(failing_replies={"paying"})
    nodes = make_nodes(redis_client, state_key, ctx)
    await nodes.route(Msg(1, "hi"))
    await nodes.route(Msg(1, "checkout"))
    await nodes.route(Msg(1, "tea"))
    assert await nodes.route(Msg(1, "pay")) == Outcome.MOVED
    assert ctx.texts(1)[-2:] == ["paid", "menu"]  # the replies after the failed one still go
    assert "could not send 'paying'" in caplog.text
    assert await nodes.route(Msg(1, "pay")) == Outcome.STAYED  # on the menu: no second order
    assert ctx.orders == [["tea"]]


async def test_after_commit_outside_a_transition_runs_at_once() -> None:
    ran: list[str] = []

    async def action() -> None:
        ran.append("now")

    await after_commit(action)
    assert ran == ["now"]


# 7. Node visits: buttons on old messages ---------------------------------------------------


async def test_every_entered_node_gets_the_next_visit_and_staying_keeps_it(
    redis_client: Redis, state_key: str
) -> None:
    nodes = make_nodes(redis_client, state_key)
    visits = []
    for text in ["hi", "checkout", "tea", "pay"]:
        await nodes.route(Msg(1, text))
        node = await nodes.user(1).get_node()
        assert node is not None
        visits.append((type(node).__name__, node.visit))
    await nodes.user(1).to(Menu())
    node = await nodes.user(1).get_node()
    assert node is not None
    first = visits[0][1]
    assert [(name, visit - first) for name, visit in [*visits, ("Menu", node.visit)]] == [
        ("Menu", 0),
        ("Checkout", 1),
        ("Checkout", 2),
        ("Menu", 3),
        ("Menu", 4),
    ]


async def test_a_press_from_an_old_visit_runs_no_node_code(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx, event_visit=lambda event: event.visit)
    await nodes.route(Msg(1, "hi"))  # visit v: the menu
    v = await visit_of(nodes, 1)
    assert await nodes.route(Msg(1, "checkout", visit=v)) == Outcome.MOVED  # visit v + 1
    assert await nodes.route(Msg(1, "checkout", visit=v)) == Outcome.STALE  # pressed twice
    assert await nodes.route(Msg(1, "tea")) == Outcome.MOVED  # typing has no visit: v + 2
    assert await nodes.route(Msg(1, "pay", visit=v + 1)) == Outcome.STALE
    assert ctx.orders == []
    node = await nodes.user(1).get_node()
    assert isinstance(node, Checkout)
    assert node._data.items == ["tea"]


async def test_a_burst_of_20_presses_of_one_button_is_acted_on_once(
    redis_client: Redis, state_key: str
) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx, event_visit=lambda event: event.visit)
    await nodes.route(Msg(1, "hi"))
    await nodes.route(Msg(1, "checkout"))
    await nodes.route(Msg(1, "tea"))
    visit = await visit_of(nodes, 1)
    outcomes = await asyncio.gather(*(nodes.route(Msg(1, "pay", visit=visit)) for _ in range(20)))
    assert sorted(o.value for o in outcomes) == ["moved"] + ["stale"] * 19
    assert ctx.orders == [["tea"]]
