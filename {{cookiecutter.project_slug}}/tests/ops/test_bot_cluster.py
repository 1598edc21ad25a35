"""The bot itself on a Redis Cluster: REDIS_CLUSTER=true and a seed node in REDIS_URL."""

from __future__ import annotations

from pydantic import SecretStr

from botnodes.testing import BotTestClient

from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.nodes import Start

from ..conftest import RecordingFoodAPI, make_settings


async def test_the_food_flow_runs_on_a_redis_cluster(
    redis_cluster_url: str, state_key: str
) -> None:
    settings = make_settings(state_key, url=SecretStr(redis_cluster_url), cluster=True)
    food_api = RecordingFoodAPI()
    async with BotTestClient.start(BOT, settings, food_api=food_api) as client:
        alice = client.user(1001)
        await alice.send("hi")
        await alice.click("Yes")
        for item in ("Soup", "Bread", "Tea"):
            await alice.send(item)
        replies = await alice.click("Finish")
        assert [reply.text for reply in replies] == [
            "Ordering Soup, Bread, Tea",
            "Ordered!",
            "Again main menu! Are you hungry?",
        ]
        assert food_api.orders == [(1001, ["Soup", "Bread", "Tea"])]
        assert isinstance(await alice.node(), Start)
