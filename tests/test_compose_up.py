"""`docker compose up` for real: the shipped Dockerfile and docker-compose.yml under podman.

A default bake is built from its own Dockerfile and brought up with its own compose file
(podman-compose on podman, with runc), plus an override that changes only what must differ
here: the Bot API URL (a fake Bot API on the compose network's gateway address of this host)
and a fixed, pre-created network so that address is known. The food flow is played through
the fake Bot API; the cart must survive a restart of the bot container and a `down` / `up`
(Redis's append-only file in the `redis-data` volume); `down -v` must delete the volume.

The base images are local stand-ins (tests/container_images/build.sh), not the official
python and redis images: no registry is reachable where these tests run. That is the one
thing this tier cannot prove.

Opt out with COMPOSE_TIER=0 (see README): the tests are then deselected, not skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .baking import bake_into
from .compose_engine import (
    TOKEN,
    Compose,
    LoopThread,
    brought_up,
    build_stand_in_images,
    container_log,
    gateway_server,
    load_fake_telegram,
    network_file,
    podman,
    podman_ok,
    require_engine,
)

pytestmark = [pytest.mark.slow, pytest.mark.compose]

PROJECT = "foodbot_composetest"
NETWORK = "foodbot-composetest"
SUBNET = "10.213.77.0/24"
GATEWAY = "10.213.77.1"  # this host's address on NETWORK: where the fake Bot API listens
ALICE = 5001
GREETING = "Hello, alice! Are you hungry?"
MAIN_MENU = "Again main menu! Are you hungry?"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Iterator[tuple[Compose, Any, LoopThread]]:
    """A default bake brought up with `compose up -d`, its fake Bot API, and the loop it runs on."""
    require_engine()
    project = bake_into(tmp_path_factory.mktemp("compose"), cookiecutter_config, {})
    build_stand_in_images(project)

    # The README's step: fill .env. Only the token is needed; the rest keeps its defaults.
    (project.path / ".env").write_text(f"BOT_TOKEN={TOKEN}\n", encoding="utf-8")

    loop = LoopThread()
    api = gateway_server(load_fake_telegram(project), GATEWAY)
    loop.run(api.start())
    override = tmp_path_factory.mktemp("override") / "compose.override.yml"
    override.write_text(
        f"services:\n  bot:\n    environment:\n      TELEGRAM_API_URL: {api.url}\n"
        + network_file(NETWORK),
        encoding="utf-8",
    )
    compose = Compose(project, PROJECT, ["docker-compose.yml"], override)
    try:
        with brought_up(compose, NETWORK, SUBNET, GATEWAY):
            yield compose, api, loop
    finally:
        loop.run(api.close())
        loop.stop()


def say(api: Any, loop: LoopThread, text: str, expect: int) -> list[str]:
    return loop.run(api.say(ALICE, text, expect, timeout=30.0))  # type: ignore[no-any-return]


def wait_polling_since(api: Any, loop: LoopThread, calls_before: int) -> None:
    """Wait for a getUpdates after `calls_before` of them: a (new) bot process is polling."""

    async def polled() -> None:
        await api.wait_for(
            lambda: len(api.calls("getUpdates")) > calls_before, 60.0, "a new getUpdates"
        )

    loop.run(polled(), timeout=90)


def state_keys(compose: Compose) -> list[str]:
    """The bot's lasting keys in Redis: not the send-limit budgets (`<STATE_KEY>:send:...`),
    which expire by design seconds after a chat's last reply (send_limits.py)."""
    out = podman("exec", compose.container("redis"), "redis-cli", "--scan", "--pattern", "*")
    return sorted(key for key in out.split() if ":send:" not in key)


def test_both_services_become_healthy_bot_is_not_root_and_redis_has_no_port(
    stack: tuple[Compose, Any, LoopThread],
) -> None:
    compose, _api, _loop = stack
    compose.wait_healthy("redis")
    compose.wait_healthy("bot")

    bot = compose.container("bot")
    assert podman("exec", bot, "id", "-u").strip() == "10001"
    assert podman("inspect", "--format", "{{.Config.User}}", bot).strip() == "10001:10001"
    # The bot process itself (PID 1 of the container), as the host sees it, is not root.
    assert podman("top", bot, "user").split()[1:] == ["bot"], podman("top", bot, "user")

    # The token comes from .env at run time: it is in neither the image nor the bot's log.
    assert TOKEN not in podman("image", "inspect", f"localhost/{PROJECT}_bot")
    assert TOKEN not in container_log(bot)

    redis = compose.container("redis")
    # EXPOSE in the image lists 6379 with no host binding (None); a `ports:` entry would bind it.
    bindings = json.loads(podman("inspect", "--format", "{{json .HostConfig.PortBindings}}", redis))
    published = {port: hosts for port, hosts in (bindings or {}).items() if hosts}
    assert not published, f"redis publishes ports: {published}"
    assert podman("port", redis).strip() == ""


def test_food_flow_cart_survives_a_bot_restart_and_down_up_then_down_v_removes_it(
    stack: tuple[Compose, Any, LoopThread],
) -> None:
    compose, api, loop = stack
    compose.wait_healthy("redis")
    compose.wait_healthy("bot")
    wait_polling_since(api, loop, 0)

    assert say(api, loop, "hi", 1) == [GREETING]
    assert say(api, loop, "Yes", 2) == [
        "No worries, I've got you back!",
        "What are you gonna order? Cart: Empty",
    ]
    assert say(api, loop, "Pizza", 2) == ["Added Pizza", "What are you gonna order? Cart: Pizza"]

    # Restart the bot container mid-cart: the cart lives in Redis, not in the process.
    polls = len(api.calls("getUpdates"))
    compose("restart", "bot")
    compose.wait_healthy("bot")
    wait_polling_since(api, loop, polls)
    assert say(api, loop, "Cola", 2) == [
        "Added Cola",
        "What are you gonna order? Cart: Pizza, Cola",
    ]

    # `down` keeps the volume; the new Redis container replays the append-only file.
    keys = state_keys(compose)
    assert keys, "the bot wrote no state to Redis"
    compose("down", timeout=180)
    assert podman_ok("volume", "exists", f"{PROJECT}_redis-data")
    polls = len(api.calls("getUpdates"))
    compose("up", "-d")
    compose.wait_healthy("redis")
    redis_log = container_log(compose.container("redis"))
    loaded = [line for line in redis_log.splitlines() if "DB loaded from" in line]
    assert any(".aof" in line for line in loaded), redis_log[-2000:]
    assert state_keys(compose) == keys
    compose.wait_healthy("bot")
    wait_polling_since(api, loop, polls)
    assert say(api, loop, "Finish", 3) == ["Ordering Pizza, Cola", "Ordered!", MAIN_MENU]

    # `down -v` deletes the users' state with the volume.
    compose("down", "-v", timeout=180)
    assert not podman_ok("volume", "exists", f"{PROJECT}_redis-data")
    assert not podman_ok("container", "exists", compose.container("redis"))
