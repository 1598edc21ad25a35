"""The bot itself on a Redis Cluster: REDIS_CLUSTER=true and a seed node in REDIS_URL."""

from __future__ import annotations

from pydantic import SecretStr

from {{ cookiecutter.project_slug }}.nodes import Start
from {{ cookiecutter.project_slug }}.redis_connection import create_redis

from .test_bot_nodes import Chat, make_settings


async def test_the_food_flow_runs_on_a_redis_cluster(
    redis_cluster_url: str, state_key: str
) -> None:
    settings = make_settings(state_key, url=SecretStr(redis_cluster_url), cluster=True)
    redis = create_redis(settings.redis)
    try:
        chat = Chat(redis, settings)
        await chat.say("hi")
        await chat.say("Yes")
        for item in ("Soup", "Bread", "Tea"):
            await chat.say(item)
        assert await chat.say("Finish") == [
            "Ordering Soup, Bread, Tea",
            "Ordered!",
            "Again main menu! Are you hungry?",
        ]
        assert chat.food_api.orders == [(1001, ["Soup", "Bread", "Tea"])]
        assert isinstance(await chat.node(), Start)
    finally:
        await redis.aclose()
