"""The food flow, and the three ways of implementing it that the benchmark compares.

1. `botnodes`: the generated bot's own nodes (its `BOT` definition, `<package>/main.py`) on
   the bake's runtime (`botnodes.telegram`: `create_nodes`, `build_dispatcher`), imported from
   a freshly baked project, so the measured path is the shipped one.
2. `fsm` / `fsm-noiso`: the same conversation written the idiomatic aiogram way
   (`StatesGroup`, `FSMContext.get_data / update_data / set_state`, `RedisStorage`),
   with `RedisEventIsolation` (safe across processes) and without it (aiogram's default).
3. `floor`: the same (the bot's own) dispatcher, whose one state handler does exactly one
   GET and one SET of a small JSON value per update and sends the same replies: the least
   any Redis-backed design can cost, with routing, filters and middlewares held equal.

Every variant replies with exactly the generated bot's texts, so the checks in
`measure.py` can demand the same conversation from all of them.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import inspect
import itertools
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiogram import Bot, Dispatcher, Router
from aiogram.filters import BaseFilter, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import DefaultKeyBuilder
from aiogram.fsm.storage.redis import RedisEventIsolation, RedisStorage
from aiogram.types import Message, Update
from redis.asyncio import Redis

#: One user's conversation: first contact, "Yes", five items, "Finish" (8 updates, 16 replies:
#: the generated bot shows the cart again after every item).
ITEMS = ("Pizza", "Soup", "Tea", "Cake", "Salad")
FLOW: tuple[str, ...] = ("hi", "Yes", *ITEMS, "Finish")

VARIANTS = ("botnodes", "fsm", "fsm-noiso", "floor", "ceiling")

BOT_TOKEN = "42:BENCHMARK-TOKEN"
_DATE = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)

# The generated bot's texts (nodes/start.py, hungry.py, hold.py); FSM and floor reuse them.
MENU_AGAIN = "Again main menu! Are you hungry?"
YES_REPLY = "No worries, I've got you back!"
NO_REPLY = "Write me when you are ready then!"
WHAT_REPLY = "Say what?"
EMPTY_CART_REPLY = "Cart is empty! Write Cancel to cancel the order"
CANCELLED_REPLY = "Order cancelled!"
ORDERED_REPLY = "Ordered!"


def greeting(name: str) -> str:
    return f"Hello, {name}! Are you hungry?"


def cart_prompt(order: Sequence[str]) -> str:
    return f"What are you gonna order? Cart: {', '.join(order) if order else 'Empty'}"


def added(item: str) -> str:
    return f"Added {item}"


def ordering(order: Sequence[str]) -> str:
    return f"Ordering {', '.join(order)}"


def username(user_id: int) -> str:
    return f"u{user_id}"


def expected_first_flow(user_id: int) -> list[str]:
    """The replies a new user gets for `FLOW`, identical for every variant."""
    return [
        greeting(username(user_id)),
        YES_REPLY,
        cart_prompt([]),
        *(
            reply
            for n, item in enumerate(ITEMS, 1)
            for reply in (added(item), cart_prompt(ITEMS[:n]))
        ),
        ordering(ITEMS),
        ORDERED_REPLY,
        MENU_AGAIN,
    ]


_update_ids = itertools.count(1)


def make_update(bot: Bot, user_id: int, text: str) -> Update:
    """A private-chat text message from `user_id`, bound to `bot` as long polling delivers it.

    aiogram parses getUpdates answers with the bot in the validation context; an unbound
    Update would make `feed_update` dump and re-validate the whole Update (a JSON round trip
    that real polling never pays), so it is bound here, outside the timed section.
    """
    update_id = next(_update_ids)
    data = {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": _DATE,
            "chat": {"id": user_id, "type": "private"},
            "from": {
                "id": user_id,
                "is_bot": False,
                "first_name": "Bench",
                "username": username(user_id),
            },
            "text": text,
        },
    }
    return Update.model_validate(data, context={"bot": bot})


class NullFoodAPI:
    """Accepts every order at once: the food API is an external service, like Telegram."""

    def __init__(self) -> None:
        self.orders = 0

    async def order_food(
        self, user_id: int, items: Sequence[str], *, idempotency_key: str = ""
    ) -> None:
        self.orders += 1

    async def close(self) -> None:
        """Nothing to release."""


@dataclass
class Variant:
    """A ready-to-feed implementation: its dispatcher, bot, recorded replies and Redis."""

    name: str
    dispatcher: Dispatcher
    bot: Bot
    #: The baked bot's own Bot API stand-in (`botnodes.testing.fake_bot_api.FakeSession`).
    session: Any
    redis: Redis
    food_api: NullFoodAPI
    info: dict[str, Any] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: Sizes of the in-process structures that could grow with users (scale run).
    probe: Callable[[], dict[str, int]] = field(default=lambda: {})
    #: Objects a run may drive directly (the botnodes variant: its `Nodes` and settings).
    handles: dict[str, Any] = field(default_factory=dict)

    async def feed(self, update: Update) -> None:
        await self.dispatcher.feed_update(self.bot, update)

    async def close(self) -> None:
        for closer in self.closers:
            await closer()
        await self.bot.session.close()


# --- aiogram's filters, written as a careful user writes them --------------------------------
# aiogram 3.31 runs every non-async filter in a worker thread (asyncio.to_thread): a plain
# `F.text == "Yes"` or a bare `Food.hungry` state costs a thread hop per check. These are async.


class IsPrivate(BaseFilter):
    """Same guard as the generated bot: only private chats have a conversation."""

    async def __call__(self, message: Message) -> bool:
        return message.chat.type == "private"


class TextIs(BaseFilter):
    """`F.text == value`, but evaluated on the event loop."""

    def __init__(self, value: str) -> None:
        self.value = value

    async def __call__(self, message: Message) -> bool:
        return message.text == self.value


class Food(StatesGroup):
    start = State()
    hungry = State()
    hold = State()


def build_fsm_router(food_api: NullFoodAPI) -> Router:
    """The food flow in idiomatic aiogram FSM style (StateFilter + get/update_data/set_state)."""
    router = Router(name="bench.fsm")
    router.message.filter(IsPrivate())

    @router.message(StateFilter(None))
    async def first_contact(message: Message, state: FSMContext, bot: Bot) -> None:
        await bot.send_message(message.chat.id, greeting(_name(message)))
        await state.set_state(Food.start)

    @router.message(StateFilter(Food.start), TextIs("Yes"))
    async def start_yes(message: Message, state: FSMContext, bot: Bot) -> None:
        await bot.send_message(message.chat.id, YES_REPLY)
        await state.set_state(Food.hungry)
        await bot.send_message(message.chat.id, cart_prompt([]))

    @router.message(StateFilter(Food.start), TextIs("No"))
    async def start_no(message: Message, state: FSMContext, bot: Bot) -> None:
        await bot.send_message(message.chat.id, NO_REPLY)
        await state.set_state(Food.hold)

    @router.message(StateFilter(Food.start))
    async def start_other(message: Message, bot: Bot) -> None:
        await bot.send_message(message.chat.id, WHAT_REPLY)
        await bot.send_message(message.chat.id, MENU_AGAIN)

    @router.message(StateFilter(Food.hold))
    async def hold_any(message: Message, state: FSMContext, bot: Bot) -> None:
        await state.set_state(Food.start)
        await bot.send_message(message.chat.id, MENU_AGAIN)

    @router.message(StateFilter(Food.hungry), TextIs("Finish"))
    async def hungry_finish(message: Message, state: FSMContext, bot: Bot) -> None:
        order: list[str] = (await state.get_data()).get("order", [])
        if not order:
            await bot.send_message(message.chat.id, EMPTY_CART_REPLY)
            await bot.send_message(message.chat.id, cart_prompt([]))
            return
        await bot.send_message(message.chat.id, ordering(order))
        await food_api.order_food(message.chat.id, order)
        await bot.send_message(message.chat.id, ORDERED_REPLY)
        await state.set_data({})
        await state.set_state(Food.start)
        await bot.send_message(message.chat.id, MENU_AGAIN)

    @router.message(StateFilter(Food.hungry), TextIs("Cancel"))
    async def hungry_cancel(message: Message, state: FSMContext, bot: Bot) -> None:
        await bot.send_message(message.chat.id, CANCELLED_REPLY)
        await state.set_data({})
        await state.set_state(Food.start)
        await bot.send_message(message.chat.id, MENU_AGAIN)

    @router.message(StateFilter(Food.hungry))
    async def hungry_item(message: Message, state: FSMContext, bot: Bot) -> None:
        item = message.text or ""
        order: list[str] = (await state.get_data()).get("order", [])
        order = [*order, item]
        await bot.send_message(message.chat.id, added(item))
        await state.update_data(order=order)
        await bot.send_message(message.chat.id, cart_prompt(order))

    return router


def _name(message: Message) -> str:
    user = message.from_user
    if user is None:
        return "friend"
    return user.username or user.full_name


#: The baked project's Bot API stand-in (the package `botnodes/testing/fake_bot_api/`), loaded
#: from its files by the worker, so a `--baseline` bake without one is measured on the same
#: stand-in.
FAKE_BOT_API: Any = None


def load_fake_bot_api(path: str) -> None:
    global FAKE_BOT_API
    package = Path(path)
    spec = importlib.util.spec_from_file_location(
        "bench_fake_bot_api",
        package / "__init__.py",
        submodule_search_locations=[str(package)],  # its modules import each other relatively
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"no Bot API stand-in at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    FAKE_BOT_API = module


# --- the bake's runtime ------------------------------------------------------------------------
# The runtime (dispatcher, settings, buttons, send limits...) is `botnodes.telegram` of the bake;
# a bake from before it left the bot's package (a `--baseline` checkout) had it in
# `<package>.<module>`, some modules under another name. Each worker imports one bake only.

#: The runtime's module names in a bake from before the move, where they differ.
_NAMES_BEFORE_THE_MOVE = {"dispatcher": "routers", "settings": "config", "app": "main"}


def runtime_moved() -> bool:
    """Whether the bake's runtime is `botnodes.telegram` (not in the bot's package)."""
    return importlib.util.find_spec("botnodes.telegram") is not None


def _runtime_name(package: str, module: str) -> str:
    if runtime_moved():
        return f"botnodes.telegram.{module}"
    return f"{package}.{_NAMES_BEFORE_THE_MOVE.get(module, module)}"


def runtime_has(package: str, module: str) -> bool:
    """Whether the bake's runtime has `module` (a --baseline bake may predate it)."""
    return importlib.util.find_spec(_runtime_name(package, module)) is not None


def runtime_module(package: str, module: str) -> Any:
    """`botnodes.telegram.<module>` of the bake (see above for a bake from before the move)."""
    return importlib.import_module(_runtime_name(package, module))


def bot_definition(package: str) -> Any:
    """The bot's `BOT` (`<package>/main.py`): its nodes, settings class, catalog and routers."""
    return importlib.import_module(f"{package}.main").BOT


def bot_dispatcher(package: str, nodes: Any, languages: Any = None) -> Dispatcher:
    """The bake's own dispatcher around `nodes`, counting updates in flight as `App` does.

    `nodes` is botnodes' `Nodes` or a stand-in with its `route` (and `user`, for /start):
    the bot's routers (`BOT.build_routers`) inside the runtime's. Without `languages`, users
    get the default language and no stored choice (no Redis read).
    """
    in_flight = runtime_module(package, "middlewares").InFlightUpdates()
    dispatcher = runtime_module(package, "dispatcher")
    if not runtime_moved():
        extra = {} if languages is None else {"languages": languages}
        return dispatcher.build_dispatcher(nodes, in_flight, **extra)
    definition = bot_definition(package)
    if languages is None:
        languages = runtime_module(package, "language").Languages(definition.catalog)
    routers = definition.build_routers(nodes)
    return dispatcher.build_dispatcher(routers, nodes, languages, in_flight)


def _new_bot(package: str) -> tuple[Bot, Any]:
    """A Bot on the baked project's own Bot API stand-in, for every variant alike.

    It answers in process with what Telegram answers and keeps Telegram's rules (the
    4,096 characters, the 64 bytes of callback data), so a variant can't win by sending
    something Telegram would refuse; only the network round trip is left out.
    """
    session = FAKE_BOT_API.FakeSession()
    return Bot(BOT_TOKEN, session=session), session


def build_fsm(redis: Redis, prefix: str, package: str, *, isolation: bool) -> Variant:
    """aiogram's FSM on RedisStorage, with RedisEventIsolation or aiogram's default (none)."""
    bot, session = _new_bot(package)
    food_api = NullFoodAPI()
    key_builder = DefaultKeyBuilder(prefix=prefix)
    storage = RedisStorage(redis, key_builder=key_builder)
    kwargs: dict[str, Any] = {}
    if isolation:
        kwargs["events_isolation"] = RedisEventIsolation(redis, key_builder=key_builder)
    dispatcher = Dispatcher(storage=storage, **kwargs)
    dispatcher.include_router(build_fsm_router(food_api))
    return Variant(
        name="fsm" if isolation else "fsm-noiso",
        dispatcher=dispatcher,
        bot=bot,
        session=session,
        redis=redis,
        food_api=food_api,
        info={"isolation": "RedisEventIsolation" if isolation else "none (aiogram default)"},
    )


class GetSetState:
    """Stands in for `Nodes` in the bot's own dispatcher: one GET and one SET per update.

    No lock, no codec, no node objects: the state is a small JSON dict and the replies are
    the generated bot's. Plugged into the bot's `build_dispatcher`, it keeps every router,
    filter and middleware of the botnodes variant, so the two differ only in state handling.
    """

    def __init__(
        self, redis: Redis, prefix: str, bot: Bot, food_api: NullFoodAPI, package: str
    ) -> None:
        self._redis, self._prefix, self._bot, self._food_api = redis, prefix, bot, food_api
        # The bot's routers read `nodes.ctx.payments` (the checkout's updates): none here.
        self.ctx = SimpleNamespace(payments=None)
        # The bot's own buttons, so every variant on the bot's dispatcher sends the same replies.
        self._keyboard = runtime_module(package, "buttons").keyboard

    def user(self, user_id: int) -> Any:
        raise NotImplementedError("/start is not part of the benchmark's flow")

    async def _load(self, key: str) -> dict[str, Any]:
        raw = await self._redis.get(key)
        return json.loads(raw) if raw else {"node": None, "v": 0}

    async def _save(self, key: str, state: dict[str, Any]) -> None:
        await self._redis.set(key, json.dumps(state, separators=(",", ":")))

    async def route(self, event: Message) -> None:
        key = f"{self._prefix}:{event.chat.id}"
        state = await self._load(key)
        await self._save(key, await self._next(state, state.get("v", 0) + 1, event))

    async def _next(self, state: dict[str, Any], visit: int, event: Message) -> dict[str, Any]:
        """Send the replies the bot sends for `event`; return the new state."""
        bot, chat_id = self._bot, event.chat.id
        node, text = state["node"], event.text or ""
        yes_no = self._keyboard(visit, "Yes", "No")
        if node is None:
            await bot.send_message(chat_id, greeting(_name(event)), reply_markup=yes_no)
            state = {"node": "start", "v": visit}
        elif node == "start":
            if text == "Yes":
                await bot.send_message(chat_id, YES_REPLY)
                state = {"node": "hungry", "order": [], "v": visit}
                cart = self._keyboard(visit, "Finish", "Cancel")
                await bot.send_message(chat_id, cart_prompt([]), reply_markup=cart)
            elif text == "No":
                await bot.send_message(chat_id, NO_REPLY)
                state = {"node": "hold", "v": visit}
            else:
                await bot.send_message(chat_id, WHAT_REPLY)
                await bot.send_message(chat_id, MENU_AGAIN, reply_markup=yes_no)
                state = {"node": "start", "v": visit}
        elif node == "hold":
            await bot.send_message(chat_id, MENU_AGAIN, reply_markup=yes_no)
            state = {"node": "start", "v": visit}
        else:
            state = await self._hungry(chat_id, text, state["order"], visit)
        return state

    async def _hungry(
        self, chat_id: int, text: str, order: list[str], visit: int
    ) -> dict[str, Any]:
        bot = self._bot
        cart = self._keyboard(visit, "Finish", "Cancel")
        if text == "Finish" and not order:
            await bot.send_message(chat_id, EMPTY_CART_REPLY)
            await bot.send_message(chat_id, cart_prompt([]), reply_markup=cart)
            return {"node": "hungry", "order": [], "v": visit}
        if text == "Finish":
            await bot.send_message(chat_id, ordering(order))
            await self._food_api.order_food(chat_id, order)
            await bot.send_message(chat_id, ORDERED_REPLY)
            yes_no = self._keyboard(visit, "Yes", "No")
            await bot.send_message(chat_id, MENU_AGAIN, reply_markup=yes_no)
            return {"node": "start", "v": visit}
        if text == "Cancel":
            await bot.send_message(chat_id, CANCELLED_REPLY)
            yes_no = self._keyboard(visit, "Yes", "No")
            await bot.send_message(chat_id, MENU_AGAIN, reply_markup=yes_no)
            return {"node": "start", "v": visit}
        order = [*order, text]
        await bot.send_message(chat_id, added(text))
        await bot.send_message(chat_id, cart_prompt(order), reply_markup=cart)
        return {"node": "hungry", "order": order, "v": visit}


class InMemoryState(GetSetState):
    """The ceiling: the same handler and replies, with the state in a dict, no storage at all.

    It is what the bot's dispatcher, routers, middlewares and replies cost by themselves;
    botnodes' throughput over this is the share of the update that state handling takes.
    """

    def __init__(self, bot: Bot, food_api: NullFoodAPI, package: str) -> None:
        super().__init__(None, "", bot, food_api, package)  # type: ignore[arg-type]
        self._states: dict[str, dict[str, Any]] = {}

    async def _load(self, key: str) -> dict[str, Any]:
        return self._states.get(key) or {"node": None, "v": 0}

    async def _save(self, key: str, state: dict[str, Any]) -> None:
        self._states[key] = state


def build_floor(redis: Redis, prefix: str, package: str) -> Variant:
    """The bot's own dispatcher with `GetSetState` in place of botnodes: the cost floor."""
    bot, session = _new_bot(package)
    food_api = NullFoodAPI()
    state = GetSetState(redis, prefix, bot, food_api, package)
    dispatcher = bot_dispatcher(package, state)
    info = {"isolation": "none (no lock at all)", "dispatcher": "the bot's build_dispatcher"}
    return Variant("floor", dispatcher, bot, session, redis, food_api, info)


def build_ceiling(redis: Redis, prefix: str, package: str) -> Variant:
    """The bot's own dispatcher with `InMemoryState`: no storage at all, the ceiling."""
    bot, session = _new_bot(package)
    food_api = NullFoodAPI()
    state = InMemoryState(bot, food_api, package)
    dispatcher = bot_dispatcher(package, state)
    info = {"isolation": "none; state in a dict", "dispatcher": "the bot's build_dispatcher"}
    return Variant("ceiling", dispatcher, bot, session, redis, food_api, info)


def build_botnodes(redis: Redis, prefix: str, package: str, **nodes_options: Any) -> Variant:
    """The baked bot's own nodes, `create_nodes` and `build_dispatcher`, on the fake session.

    Settings come from the environment through the runtime's `load_settings` with the bot's
    own `Settings`, exactly as in production; only the Bot session (no network) and the food
    API (an external service) are replaced. The Redis client is the shared benchmark client
    (same pool and timeouts as the runtime's `create_redis`, plus round-trip counting).
    `nodes_options` go to `create_nodes` (the timers run passes an observer and a clock it
    moves).
    """
    app = runtime_module(package, "app")
    nodes_types = importlib.import_module(f"{package}.nodes_types")
    # The runtime's builders take the bot's `BOT` first; a bake from before the move had them
    # in its own main.py, for its one bot.
    definition = (bot_definition(package),) if runtime_moved() else ()

    os.environ["BOT_TOKEN"] = BOT_TOKEN
    os.environ["STATE_KEY"] = prefix
    settings_module = runtime_module(package, "settings")
    settings_class = tuple(d.settings_class for d in definition)
    settings = settings_module.load_settings(*settings_class, env_file=None)
    bot, session = _new_bot(package)
    food_api = NullFoodAPI()
    parts: dict[str, Any] = {}
    # A bot with languages reads each user's language in its Redis batches: built as `App` does.
    if hasattr(app, "create_languages"):
        parts["languages"] = app.create_languages(*definition, settings, redis)
    ctx = nodes_types.Ctx(
        bot=bot, settings=settings, food_api=food_api, logger=logging.getLogger(package), **parts
    )
    limiter = send_limiter(package, redis, prefix)
    if limiter is not None and "limiter" in inspect.signature(app.create_nodes).parameters:
        # As `App` does since the commit script reserves a step's turns (`StepTurns`).
        nodes_options = {**nodes_options, "limiter": limiter}
    nodes = app.create_nodes(*definition, settings, redis, ctx, **nodes_options)
    dispatcher = bot_dispatcher(package, nodes, parts.get("languages"))
    limits = add_send_limits(package, dispatcher, session, redis, prefix, limiter, nodes)
    info = {
        "isolation": "botnodes lock (local FIFO + Redis lock in the same scripts)",
        "lock_ttl": settings.state.lock_ttl,
        "lock_wait_timeout": settings.state.lock_wait_timeout,
        "prefix": prefix,
        "send limits": limits,
    }
    # A --baseline bake may predate buttons: then there is no keyboard cache to report.
    has_buttons = runtime_has(package, "buttons")
    keyboard = runtime_module(package, "buttons").keyboard if has_buttons else None

    def probe() -> dict[str, int]:
        # Private attributes, read on purpose: these are what would leak per user. Bakes
        # differ: the background tasks moved into `_locks` (lease.py), keyboards lost their
        # cache when visits became unique to a user.
        pipeline = nodes._store._pipeline
        locks = getattr(nodes, "_locks", None)
        background = locks._background if locks is not None else nodes._background
        cache_info = getattr(keyboard, "cache_info", None)
        return {
            "botnodes busy users (local lock slots)": nodes.busy_users,
            "botnodes routes in flight": nodes.in_flight,
            "botnodes background tasks": len(background),
            "pipeline queued calls": len(pipeline._queue) if pipeline else 0,
            "pipeline flushes running": len(pipeline._flushes) if pipeline else 0,
            "cached keyboards (bounded: 4096)": cache_info().currsize if cache_info else 0,
        }

    handles = {"nodes": nodes, "settings": settings}
    return Variant(
        "botnodes", dispatcher, bot, session, redis, food_api, info, probe=probe, handles=handles
    )


def send_limiter(package: str, redis: Redis, prefix: str) -> Any:
    """The shared send budgets `App` makes (None if the bake predates them).

    The budgets are made so large that no reply ever waits: the run measures what taking the
    turns costs, not Telegram's pace (1 message/s per chat would be the whole figure otherwise).
    """
    if not runtime_has(package, "send_limits"):
        return None
    send_limits = runtime_module(package, "send_limits")
    never_waits = runtime_module(package, "settings").SendLimitSettings.model_construct(
        send_limits=True, chat_rate=1e6, group_rate=1e8, chat_burst=1000, broadcast_rate=1e6
    )
    return send_limits.SendLimiter(redis, prefix, never_waits)


def add_send_limits(
    package: str,
    dispatcher: Dispatcher,
    session: Any,
    redis: Redis,
    prefix: str,
    limiter: Any,
    nodes: Any,
) -> str:
    """What `App` adds around the nodes since issue 19, if the bake has it: the shared send
    budgets and the registry of users (one SADD per user per process), each riding in
    botnodes' batches where the bake does that (the step's turns in the commit script, the
    registration beside the lock script), else one script call of their own.
    """
    if limiter is None:
        return "none (this bake predates them)"
    send_limits = runtime_module(package, "send_limits")
    recipients = runtime_module(package, "recipients")
    session.middleware(send_limits.KeepSendRate(limiter))
    dispatcher.update.outer_middleware(send_limits.CountStepReplies())
    registry = recipients.Recipients(redis, prefix)
    if hasattr(registry, "batch_with"):
        registry.batch_with(nodes.run_script)
    recipients.watch_users(dispatcher, registry)
    return "per-chat budget (never waits) + registry"


def build_variant(name: str, redis: Redis, prefix: str, package: str) -> Variant:
    if name == "botnodes":
        return build_botnodes(redis, prefix, package)
    if name == "fsm":
        return build_fsm(redis, prefix, package, isolation=True)
    if name == "fsm-noiso":
        return build_fsm(redis, prefix, package, isolation=False)
    if name == "floor":
        return build_floor(redis, prefix, package)
    if name == "ceiling":
        return build_ceiling(redis, prefix, package)
    raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
