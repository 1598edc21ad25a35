"""The reply budget reserved inside the commit (budget.py) and the handled-update mark
(handled.py): what they promise, against a real Redis.

A `ReplyBudget` here is a small honest implementation of the protocol (a fixed reservation per
step, the waits it is told kept in a list), so the GCRA itself runs in Redis as in production.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from botnodes import Outcome
from botnodes.budget import Reservation, ServerClock
from botnodes.storage import REFUSED, STORED, StateStore

from .botnodes_support import Cart, Menu, Msg, make_nodes

SECOND = 1000  # ms


class FixedBudget:
    """Every step of every user reserves `count` turns: `burst` at once, then one a second."""

    def __init__(self, prefix: str, *, count: int, burst: int) -> None:
        self.prefix = prefix
        self.count = count
        self.burst = burst
        self.asked = 0
        self.told: list[list[int]] = []

    def key(self, user_id: Any) -> str:
        return f"{self.prefix}:{{{user_id}}}:budget"  # the user's hash tag: their slot

    def reservation(self, user_id: Any) -> Reservation | None:
        self.asked += 1
        return Reservation(self.key(user_id), SECOND, self.burst, self.count)

    def reserved(self, user_id: Any, waits_ms: list[int]) -> None:
        self.told.append(waits_ms)


async def evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_steps_replies_take_their_turns_in_the_commit_burst_first_then_the_rate(
    redis_client: Redis, state_key: str
) -> None:
    budget = FixedBudget(state_key, count=0, burst=2)
    nodes = make_nodes(redis_client, state_key, reply_budget=budget)
    await nodes.user(1).to(Cart())  # with nothing to reserve: the budget is untouched
    budget.count = 3
    before = await evalsha_calls(redis_client)
    assert await nodes.route(Msg(1, "tea", event_id="m1")) == Outcome.STAYED
    # Lock-and-read, then the commit that also reserved: no script call of its own.
    assert await evalsha_calls(redis_client) - before == 2
    # Three turns in one call: two in the burst go at once, the third a second later.
    assert budget.told == [[0, 0, SECOND]]
    # The next step, right after, finds the burst spent: a turn a second, after the third.
    await nodes.route(Msg(1, "soup", event_id="m2"))
    first, second, third = budget.told[-1]
    assert SECOND < first <= 2 * SECOND  # minus the few ms between the two steps
    assert (second - first, third - second) == (SECOND, SECOND)
    # The key forgets itself once the budget would be full again (nothing kept per idle chat).
    assert 5 * SECOND < await redis_client.pttl(budget.key(1)) <= 6 * SECOND + 1  # 6 turns


async def time_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_time", {}).get("calls", 0))


async def test_each_replica_reads_the_servers_clock_once_then_paces_on_it_without_time(
    redis_client: Redis, state_key: str
) -> None:
    """The commit's turns are on the Redis server's clock, which a replica reads with `TIME`
    once (ServerClock) and then tracks: later commits send it instead of asking again."""
    replicas = [
        StateStore(redis_client, state_key, state_ttl_ms=None, lock_ttl_ms=5000, legacy=False)
        for _ in range(2)
    ]
    reserve = Reservation(f"{state_key}:{{1}}:budget", SECOND, 1, 1)  # one turn a second

    async def commit(replica: int, n: int) -> int:
        store, token = replicas[replica], f"{replica}a:{n}"
        locked = await store.try_lock_and_read(1, token)
        written = await store.write_and_unlock(
            1, token, f'{{"n": {n}}}', read_digest=locked.read_digest, reserve=reserve
        )
        assert written.status == STORED
        (wait,) = written.waits_ms
        return wait

    await redis_client.set(replicas[0].state_key(1), '{"n": -1}')  # not a first visit
    before = await time_calls(redis_client)
    waits = [await commit(replica, n) for n, replica in enumerate((0, 0, 1, 1, 0))]
    assert await time_calls(redis_client) - before == 2  # one reading per replica
    # Both replicas count one budget on one clock: a turn a second, whoever reserves it
    # (minus the few ms between the commits, plus at most a tracked clock's error).
    assert waits[0] == 0
    for turn, wait in enumerate(waits[1:], start=1):
        assert turn * SECOND - 200 < wait <= turn * SECOND + ServerClock.MAX_ERROR_MS, waits


def test_a_clock_reading_from_a_slow_round_trip_does_not_replace_a_good_one() -> None:
    def since_reading_ms(at: float) -> float:
        return (time.monotonic() - at) * 1000

    clock = ServerClock()
    assert clock.now_ms() == ""  # never read: the script reads it
    now = time.monotonic()
    clock.read(1_000_000, sent=now - 0.002, answered=now)  # 1 ms either side
    read_at = now - 0.001  # placed at the middle of the round trip
    assert abs(int(clock.now_ms()) - 1_000_000 - since_reading_ms(read_at)) <= 1
    now = time.monotonic() + 5  # a trip of 500 ms, a few seconds on: 250 ms either side
    clock.read(1_000_000 + 5_000, sent=now - 0.5, answered=now)
    assert abs(int(clock.now_ms()) - 1_000_000 - since_reading_ms(read_at)) <= 1  # kept


async def test_a_refused_commit_or_a_release_reserves_nothing(
    redis_client: Redis, state_key: str
) -> None:
    store = StateStore(redis_client, state_key, state_ttl_ms=None, lock_ttl_ms=5000, legacy=False)
    reserve = Reservation(f"{state_key}:{{1}}:budget", SECOND, 1, 2)
    locked = await store.try_lock_and_read(1, "ab:1")
    await redis_client.set(store.state_key(1), '{"someone": "else"}')  # another writer
    written = await store.write_and_unlock(
        1, "ab:1", '{"mine": 1}', read_digest=locked.read_digest, reserve=reserve
    )
    assert (written.status, written.waits_ms) == (REFUSED, [])
    # A release stores nothing, so its replies (there are none) take no turn either.
    await store.try_lock_and_read(1, "ab:2")
    released = await store.write_and_unlock(1, "ab:2", None, read_digest="", reserve=reserve)
    assert released.waits_ms == []
    assert await redis_client.exists(reserve.key) == 0


async def test_a_budget_key_of_another_type_counts_as_an_idle_budget(
    redis_client: Redis, state_key: str
) -> None:
    budget = FixedBudget(state_key, count=0, burst=1)
    nodes = make_nodes(redis_client, state_key, reply_budget=budget)
    await nodes.user(1).to(Cart())
    budget.count = 2
    await redis_client.rpush(budget.key(1), "junk")  # a hand-made value, a bug
    budget.told.clear()
    assert await nodes.route(Msg(1, "tea")) == Outcome.STAYED
    assert budget.told == [[0, SECOND]]
    assert await redis_client.type(budget.key(1)) == b"string"


async def test_a_step_without_replies_or_without_budget_reserves_nothing(
    redis_client: Redis, state_key: str
) -> None:
    budget = FixedBudget(state_key, count=0, burst=1)
    nodes = make_nodes(redis_client, state_key, reply_budget=budget)
    await nodes.route(Msg(1, "hi"))
    assert budget.asked == 1
    assert budget.told == []
    assert await redis_client.exists(budget.key(1)) == 0


# handled.py: an update handled outside the nodes ------------------------------------------


async def test_an_update_handled_outside_the_nodes_is_marked_once_in_every_process(
    redis_client: Redis, state_key: str
) -> None:
    first = make_nodes(redis_client, state_key)
    second = make_nodes(redis_client, state_key)  # another replica
    assert await first.mark_handled(1, "m5") is True
    assert await second.mark_handled(1, "m5") is False  # a re-delivery, elsewhere
    assert await first.mark_handled(1, "m5") is False
    assert await first.mark_handled(2, "m5") is True  # ids are per user
    # One record of handled updates: a node sees the mark, and the mark sees a node's step.
    assert await second.route(Msg(1, "hi", event_id="m5")) == Outcome.DUPLICATE
    assert await second.route(Msg(1, "hi", event_id="m6")) == Outcome.STARTED
    assert await first.mark_handled(1, "m6") is False


async def test_marks_are_bounded_to_the_newest_128_and_expire(
    redis_client: Redis, state_key: str
) -> None:
    nodes = make_nodes(redis_client, state_key, dedupe_window=1)
    for n in range(200):
        assert await nodes.mark_handled(1, f"m{n}") is True
    assert await nodes.mark_handled(1, "m199") is False  # the newest are kept
    assert await nodes.mark_handled(1, "m72") is False  # m72..m199: the 128 newest
    assert await nodes.mark_handled(1, "m71") is True  # the older ones are forgotten
    seen = f"{state_key}:{{1}}:seen"
    assert 0 < await redis_client.pttl(seen) <= 1000  # and all go a window after the last


async def test_a_handled_key_of_another_type_is_replaced_not_fatal(
    redis_client: Redis, state_key: str
) -> None:
    nodes = make_nodes(redis_client, state_key)
    await redis_client.hset(f"{state_key}:{{1}}:seen", "junk", "1")
    assert await nodes.mark_handled(1, "m1") is True
    assert await nodes.mark_handled(1, "m1") is False
    await nodes.user(1).to(Menu())
    assert await nodes.route(Msg(1, "hi", event_id="m1")) == Outcome.DUPLICATE


async def test_a_sorted_set_of_handled_ids_from_the_version_before_is_still_honoured(
    redis_client: Redis, state_key: str
) -> None:
    nodes = make_nodes(redis_client, state_key)
    await nodes.user(1).to(Cart())
    seen = f"{state_key}:{{1}}:seen"
    await redis_client.delete(seen)
    await redis_client.zadd(seen, {"m1": 1, "m2": 2})  # as the version before kept them
    assert await nodes.route(Msg(1, "tea", event_id="m2")) == Outcome.DUPLICATE
    assert await nodes.mark_handled(1, "m1") is False
    assert await nodes.route(Msg(1, "tea", event_id="m3")) == Outcome.STAYED
    # The first write replaced the set with the record; the new id is in it.
    assert await redis_client.get(seen) == b"\nm3\n"
    assert await nodes.route(Msg(1, "tea", event_id="m3")) == Outcome.DUPLICATE


async def test_the_version_befores_sorted_set_is_found_for_a_user_with_no_state(
    redis_client: Redis, state_key: str
) -> None:
    """A user without a state or a record reads as new (one EXISTS); a sorted set left by the
    version before still makes a re-delivery of what it holds a duplicate."""
    nodes = make_nodes(redis_client, state_key)
    await redis_client.zadd(f"{state_key}:{{1}}:seen", {"m1": 1})  # as the version before
    assert await nodes.route(Msg(1, "hi", event_id="m1")) == Outcome.DUPLICATE
    assert await redis_client.exists(f"{state_key}:{{1}}") == 0  # nothing handled, or stored
    assert await nodes.route(Msg(1, "hi", event_id="m2")) == Outcome.STARTED
    assert await nodes.route(Msg(2, "hi", event_id="m1")) == Outcome.STARTED  # a new user
