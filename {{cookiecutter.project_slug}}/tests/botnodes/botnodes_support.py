"""A tiny library-agnostic bot for testing botnodes itself: events are plain dataclasses.

The generated bot's own nodes are tested through aiogram elsewhere; these nodes exist to
exercise the library's contract (transitions, failures, migrations) in as few lines as possible.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis

from botnodes import Node, Nodes, after_commit

#: Keys one SCAN call looks at. The suite's Redis keeps every earlier test's keys (tests never
#: flush it), so a scan at Redis's default of 10 would take hundreds of round trips.
SCAN_COUNT = 1000


@dataclass(frozen=True)
class Msg:
    user_id: int
    text: str
    #: Set on a "button press": the node visit the button was shown on (see Node.visit).
    visit: int | None = None
    #: Like Telegram's update id: the same for a re-delivery of this very event.
    event_id: str | None = None


@dataclass
class Ctx:
    sent: list[tuple[int, str]] = field(default_factory=list)
    #: Running on_event calls, and the most that ever ran at once (parallelism checks).
    running: int = 0
    max_running: int = 0
    delay: float = 0.0
    #: When given, Cart's events wait until it is set: a handler held as long as a test needs;
    #: `at_gate` is set once one waits there.
    gate: asyncio.Event | None = None
    at_gate: asyncio.Event = field(default_factory=asyncio.Event)
    #: Orders "placed" by Checkout (an irreversible effect), and replies that must fail.
    orders: list[list[str]] = field(default_factory=list)
    failing_replies: set[str] = field(default_factory=set)

    async def reply(self, user_id: int, text: str) -> None:
        """A reply held until the transition is stored, like the bot's own replies."""

        async def send() -> None:
            if text in self.failing_replies:
                raise ConnectionError(f"could not send {text!r}")
            self.say(user_id, text)

        await after_commit(send)

    def say(self, user_id: int, text: str) -> None:
        self.sent.append((user_id, text))

    def texts(self, user_id: int) -> list[str]:
        return [text for uid, text in self.sent if uid == user_id]


class Empty(BaseModel):
    pass


class CartModel(BaseModel):
    items: list[str] = []


class Menu(Node[Ctx, Msg, int, Empty]):
    """Start node: 'cart' opens the cart, 'boom' raises, 'bad-enter' goes to a failing node."""

    def __init__(self) -> None:
        self._data = Empty()

    async def on_enter(self, user_id: int, ctx: Ctx) -> None:
        await ctx.reply(user_id, "menu")

    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> Node[Ctx, Msg, int, Any] | None:
        if event.text == "cart":
            return Cart()
        if event.text == "boom":
            raise RuntimeError("menu exploded")
        if event.text == "bad-enter":
            return BadEnter()
        if event.text == "stray":
            return Unregistered()
        if event.text == "checkout":
            return Checkout()
        ctx.say(user_id, f"menu got {event.text}")
        return None


class Cart(Node[Ctx, Msg, int, CartModel]):
    """Adds every message as an item by changing its data and staying (returns None)."""

    def __init__(self, items: list[str] | None = None) -> None:
        self._data = CartModel(items=items or [])

    async def on_enter(self, user_id: int, ctx: Ctx) -> None:
        ctx.say(user_id, f"cart: {', '.join(self._data.items) or 'empty'}")

    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> Node[Ctx, Msg, int, Any] | None:
        ctx.running += 1
        ctx.max_running = max(ctx.max_running, ctx.running)
        try:
            if ctx.delay:
                await asyncio.sleep(ctx.delay)
            if ctx.gate is not None:
                ctx.at_gate.set()
                await ctx.gate.wait()
            if event.text == "done":
                return Menu()
            if event.text == "boom":
                self._data.items.append("half-done")
                raise RuntimeError("cart exploded")
            self._data.items.append(event.text)
            return None
        finally:
            ctx.running -= 1


class BadEnter(Node[Ctx, Msg, int, Empty]):
    def __init__(self) -> None:
        self._data = Empty()

    async def on_enter(self, user_id: int, ctx: Ctx) -> None:
        raise RuntimeError("greeting failed")

    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> Node[Ctx, Msg, int, Any] | None:
        return Menu()


class Checkout(Node[Ctx, Msg, int, CartModel]):
    """Collects items; 'pay' places the order (an effect) and replies only after commit."""

    def __init__(self, items: list[str] | None = None) -> None:
        self._data = CartModel(items=items or [])

    async def on_enter(self, user_id: int, ctx: Ctx) -> None:
        await ctx.reply(user_id, f"checkout: {len(self._data.items)} item(s)")

    async def on_event(self, user_id: int, event: Msg, ctx: Ctx) -> Node[Ctx, Msg, int, Any] | None:
        if event.text == "pay":
            await ctx.reply(user_id, "paying")
            if ctx.delay:
                await asyncio.sleep(ctx.delay)
            ctx.orders.append(list(self._data.items))
            await ctx.reply(user_id, "paid")
            return Menu()
        return Checkout([*self._data.items, event.text])


class Unregistered(Menu):
    """A node class that is deliberately missing from NODES."""


NODES: dict[str, type[Node[Ctx, Msg, int, Any]]] = {
    "menu": Menu,
    "cart": Cart,
    "bad_enter": BadEnter,
    "checkout": Checkout,
}


async def visit_of(nodes: Nodes[Ctx, Msg, int], user_id: int) -> int:
    """The visit number of the user's current node (what their buttons carry)."""
    node = await nodes.user(user_id).get_node()
    assert node is not None, f"user {user_id} has no node"
    return node.visit


async def stored_json(redis: Redis, key: str) -> Any:
    """The JSON value stored under `key`, failing the test if there is none."""
    raw = await redis.get(key)
    assert raw is not None, f"nothing stored under {key}"
    return json.loads(raw)


def make_nodes(
    redis: Redis, prefix: str, ctx: Ctx | None = None, **options: Any
) -> Nodes[Ctx, Msg, int]:
    """Nodes over the test registry, with the README's constructor keywords."""
    options.setdefault("nodes_dict", NODES)
    options.setdefault("event_to_user_id", lambda event: event.user_id)
    options.setdefault("get_start_node", lambda event: Menu())
    options.setdefault("event_id", lambda event: event.event_id)
    return Nodes(
        redis_client=redis,
        redis_property_name=prefix,
        discriminator_field="node_name",
        ctx=ctx if ctx is not None else Ctx(),
        **options,
    )
