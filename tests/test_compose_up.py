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

import asyncio
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from aiohttp import web

from .baking import TEMPLATE_DIR, BakedProject, bake_into

pytestmark = [pytest.mark.slow, pytest.mark.compose]

IMAGES_DIR = TEMPLATE_DIR / "tests" / "container_images"
CONTAINERS_CONF = IMAGES_DIR / "containers.conf"
PROJECT = "foodbot_composetest"
NETWORK = "foodbot-composetest"
SUBNET = "10.213.77.0/24"
GATEWAY = "10.213.77.1"  # this host's address on NETWORK: where the fake Bot API listens
TOKEN = "123456:compose-tier-token-not-a-real-one"
ALICE = 5001
GREETING = "Hello, alice! Are you hungry?"
MAIN_MENU = "Again main menu! Are you hungry?"
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux; Python < 3.12 lacks the name

T = TypeVar("T")


def engine_env() -> dict[str, str]:
    """This environment with podman pointed at the repository's containers.conf (runc, ulimits)."""
    env = {k: v for k, v in os.environ.items() if k not in {"BOT_TOKEN", "PYTHONPATH"}}
    env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    return env


def sh(args: list[str], cwd: Path | None = None, timeout: float = 900, stderr: bool = False) -> str:
    """Run a command; fail the test with its output's tail when it exits non-zero.

    Returns stdout, or stdout and stderr interleaved with `stderr=True` (container logs).
    """
    done = subprocess.run(
        args,
        cwd=cwd,
        env=engine_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if stderr else subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + (done.stderr or "")).strip().splitlines()[-25:])
        pytest.fail(f"{' '.join(args)} exited {done.returncode}:\n{tail}")
    return done.stdout


def container_log(name: str) -> str:
    return sh(["podman", "logs", name], stderr=True)


def podman(*args: str, timeout: float = 120) -> str:
    return sh(["podman", *args], timeout=timeout)


def podman_ok(*args: str) -> bool:
    return subprocess.run(["podman", *args], env=engine_env(), capture_output=True).returncode == 0


class Compose:
    """`docker compose` for the baked project: podman-compose with the test's override."""

    def __init__(self, project: BakedProject, override: Path) -> None:
        self.project = project
        self.override = override

    def __call__(self, *args: str, timeout: float = 900) -> str:
        return sh(
            [
                sys.executable,
                "-m",
                "podman_compose",
                "--project-name",
                PROJECT,
                # The image's pip reaches PyPI through this host's network; `docker` format
                # keeps the Dockerfile's HEALTHCHECK (OCI images have none).
                "--podman-build-args",
                "--network=host --format=docker",
                "-f",
                "docker-compose.yml",
                "-f",
                str(self.override),
                *args,
            ],
            cwd=self.project.path,
            timeout=timeout,
        )

    def container(self, service: str) -> str:
        return f"{PROJECT}_{service}_1"

    def wait_healthy(self, service: str, timeout: float = 120) -> None:
        """Run the service's own healthcheck (compose's or the image's) until it says healthy.

        podman runs healthchecks from systemd timers, and there is no systemd here, so the
        test runs each check itself with `podman healthcheck run` at a short interval.
        """
        name = self.container(service)
        deadline = time.monotonic() + timeout
        while True:
            if podman_ok("healthcheck", "run", name):
                status = podman("inspect", "--format", "{{.State.Health.Status}}", name).strip()
                assert status == "healthy", f"{name}: healthcheck passed but status is {status}"
                return
            if time.monotonic() > deadline:
                health = json.loads(podman("inspect", "--format", "{{json .State.Health}}", name))
                last = (health.get("Log") or [{}])[-1].get("Output", "")
                pytest.fail(
                    f"{name} not healthy after {timeout}s: {last.strip()[:500]}\n"
                    f"its log:\n{container_log(name)[-3000:]}"
                )
            time.sleep(1)


class LoopThread:
    """An asyncio loop in a thread, so the synchronous test can drive the async fake Bot API."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def load_fake_telegram(project: BakedProject) -> ModuleType:
    """The baked project's own Bot API stand-in (`<slug>/testing/fake_bot_api.py`), loaded
    from its file: this test process does not have the baked package installed."""
    source = project.path / project.path.name / "testing" / "fake_bot_api.py"
    spec = importlib.util.spec_from_file_location("compose_tier_fake_telegram", source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def gateway_server(fake_telegram: ModuleType) -> Any:
    """The baked FakeBotAPIServer, listening on the compose network's gateway, not 127.0.0.1."""

    class GatewayBotAPIServer(fake_telegram.FakeBotAPIServer):  # type: ignore[misc,name-defined]
        @property
        def url(self) -> str:
            return f"http://{GATEWAY}:{self.port}"

        async def start(self) -> None:
            app = web.Application()
            app.router.add_route("POST", "/bot{token}/{method}", self._handle)
            app.router.add_route("GET", "/bot{token}/{method}", self._handle)
            # A bot container stopped mid long-poll must not keep its getUpdates handler
            # waiting: it would take the next update to a dead connection.
            self._runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True)
            await self._runner.setup()
            # FREEBIND: the gateway address exists only once the first container joins.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.bind((GATEWAY, 0))
            await web.SockSite(self._runner, sock).start()
            self.port = int(sock.getsockname()[1])

    return GatewayBotAPIServer(TOKEN)


def require_engine() -> None:
    """Fail with one line naming what is missing and how to get it."""
    missing = [tool for tool in ("podman", "runc", "debootstrap", "iptables") if not which(tool)]
    if importlib.util.find_spec("podman_compose") is None:
        missing.append("podman-compose (pip, requirements-dev.txt)")
    if missing:
        pytest.fail(
            f"the compose tier needs {', '.join(missing)}: `bash scripts/test.sh` installs them "
            "as root (apt-get install podman runc debootstrap iptables), or set COMPOSE_TIER=0 "
            "to leave this tier out",
            pytrace=False,
        )


def which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def python_version(project: BakedProject) -> str:
    for line in (project.path / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("ARG PYTHON_VERSION="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("the Dockerfile has no ARG PYTHON_VERSION=")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Iterator[tuple[Compose, Any, LoopThread]]:
    """A default bake brought up with `compose up -d`, its fake Bot API, and the loop it runs on."""
    require_engine()
    project = bake_into(tmp_path_factory.mktemp("compose"), cookiecutter_config, {})
    sh(["bash", str(IMAGES_DIR / "build.sh"), python_version(project)], timeout=1200)

    # The README's step: fill .env. Only the token is needed; the rest keeps its defaults.
    (project.path / ".env").write_text(f"BOT_TOKEN={TOKEN}\n", encoding="utf-8")

    loop = LoopThread()
    api = gateway_server(load_fake_telegram(project))
    loop.run(api.start())
    override = tmp_path_factory.mktemp("override") / "compose.override.yml"
    override.write_text(
        "services:\n"
        "  bot:\n"
        "    environment:\n"
        f"      TELEGRAM_API_URL: {api.url}\n"
        "networks:\n"
        "  default:\n"
        f"    name: {NETWORK}\n"
        "    external: true\n",
        encoding="utf-8",
    )
    compose = Compose(project, override)

    # Leftovers of an interrupted run would clash with the fixed names.
    compose("down", "-v", timeout=120)
    if podman_ok("network", "exists", NETWORK):
        podman("network", "rm", "-f", NETWORK)
    podman("network", "create", "--subnet", SUBNET, "--gateway", GATEWAY, NETWORK)
    try:
        compose("build", timeout=1200)
        compose("up", "-d")
        yield compose, api, loop
    finally:
        subprocess.run(
            [sys.executable, "-m", "podman_compose", "-p", PROJECT, "-f", "docker-compose.yml",
             "-f", str(override), "down", "-v"],
            cwd=project.path, env=engine_env(), capture_output=True, timeout=180,
        )  # fmt: skip
        subprocess.run(["podman", "network", "rm", "-f", NETWORK], env=engine_env(), check=False)
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
    out = podman("exec", compose.container("redis"), "redis-cli", "--scan", "--pattern", "*")
    return sorted(out.split())


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
