"""`NodesSettings`: one checked value for the tuning, and the old keywords mapping onto it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from redis.asyncio import Redis

from botnodes import ConfigurationError, Nodes, NodesSettings, Outcome

from .botnodes_support import NODES, Ctx, Menu, Msg, make_nodes


def test_keywords_and_settings_make_the_same_tuning(redis_client: Redis, state_key: str) -> None:
    settings = NodesSettings(lock_ttl=2.0, state_max_bytes=4096, lock_during_replies=False)
    by_keywords = make_nodes(
        redis_client, state_key, lock_ttl=2.0, state_max_bytes=4096, lock_during_replies=False
    )
    by_settings = make_nodes(redis_client, state_key, settings=settings)
    assert by_keywords.settings == by_settings.settings == settings
    assert make_nodes(redis_client, state_key).settings == NodesSettings()


async def test_nodes_built_from_settings_route(redis_client: Redis, state_key: str) -> None:
    ctx = Ctx()
    nodes = make_nodes(redis_client, state_key, ctx, settings=NodesSettings(max_concurrent=2))
    assert await nodes.route(Msg(1, "hi")) is Outcome.STARTED
    assert await nodes.route(Msg(1, "cart")) is Outcome.MOVED
    assert ctx.texts(1) == ["menu", "cart: empty"]


def test_the_readme_positional_arguments_still_work(redis_client: Redis, state_key: str) -> None:
    nodes: Nodes[Ctx, Msg, int] = Nodes(
        redis_client,
        state_key,
        NODES,
        "node_name",
        lambda event: Menu(),
        Ctx(),
        lambda event: event.user_id,
        settings=NodesSettings(lock_ttl=3.0),
    )
    assert nodes.settings.lock_ttl == 3.0


def test_a_keyword_alongside_settings_is_refused(redis_client: Redis, state_key: str) -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"^lock_ttl, state_ttl given alongside settings=: set them in the NodesSettings",
    ):
        make_nodes(redis_client, state_key, settings=NodesSettings(), lock_ttl=2.0, state_ttl=60.0)


def test_an_unknown_keyword_is_a_type_error(redis_client: Redis, state_key: str) -> None:
    with pytest.raises(TypeError, match=r"^Nodes\(\) got an unexpected keyword argument 'lock_tl'"):
        make_nodes(redis_client, state_key, lock_tl=2.0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lock_ttl": 0}, "lock_ttl=0 must be a positive number of seconds, at most"),
        ({"dedupe_window": -1.0}, "dedupe_window=-1.0 must be a positive number of seconds"),
        ({"commit_timeout": 0}, "commit_timeout=0 must be a positive number of seconds"),
        ({"timer_poll_interval": "1"}, "timer_poll_interval='1' must be a positive number"),
        ({"max_concurrent": 0}, "max_concurrent=0 must be a whole number of at least 1"),
        ({"state_max_bytes": 1.5}, "state_max_bytes=1.5 must be a whole number of at least 1"),
        ({"timer_shards": 0}, "timer_shards=0 must be a whole number of at least 1"),
    ],
)
def test_bad_settings_are_refused_in_one_line(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        NodesSettings(**values)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_settings_are_frozen_and_replaceable() -> None:
    settings = NodesSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.lock_ttl = 1.0  # type: ignore[misc]
    assert dataclasses.replace(settings, lock_ttl=1.0).lock_ttl == 1.0
    with pytest.raises(ConfigurationError, match=r"^lock_ttl=-1"):
        dataclasses.replace(settings, lock_ttl=-1)
