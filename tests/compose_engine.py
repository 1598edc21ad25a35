"""Running a baked project's compose files under podman, for the compose tier's tests.

podman-compose on podman with runc stands in for `docker compose` on Docker (no Docker daemon
runs where these tests do); `tests/container_images/containers.conf` holds the two engine
settings this machine kind needs. The base images are local stand-ins built by
`tests/container_images/build.sh`, since no registry is reachable here.

The bot reaches the Bot API stand-in on the compose network's gateway (this host), so every
stack runs on a pre-created network with a known subnet, and the baked project's own
`FakeBotAPIServer` listens on the gateway address.
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
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from aiohttp import web

from .baking import TEMPLATE_DIR, BakedProject

IMAGES_DIR = TEMPLATE_DIR / "tests" / "container_images"
CONTAINERS_CONF = IMAGES_DIR / "containers.conf"
TOKEN = "123456:compose-tier-token-not-a-real-one"
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux; Python < 3.12 lacks the name

T = TypeVar("T")


def engine_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with podman pointed at the repository's containers.conf (runc, ulimits)."""
    env = {k: v for k, v in os.environ.items() if k not in {"BOT_TOKEN", "PYTHONPATH"}}
    env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    env.update(extra or {})
    return env


def sh(
    args: list[str],
    cwd: Path | None = None,
    timeout: float = 900,
    stderr: bool = False,
    env: dict[str, str] | None = None,
) -> str:
    """Run a command; fail the test with its output's tail when it exits non-zero.

    Returns stdout, or stdout and stderr interleaved with `stderr=True` (container logs).
    """
    done = subprocess.run(
        args,
        cwd=cwd,
        env=engine_env(env),
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
    """`docker compose -f ... -f <override>` for the baked project, as podman-compose."""

    def __init__(
        self,
        project: BakedProject,
        name: str,
        files: list[str],
        override: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.project = project
        self.name = name
        self.files = [*files, str(override)]
        #: Variables the compose files interpolate (`DOMAIN=... docker compose up`).
        self.env = env or {}

    def args(self, *args: str) -> list[str]:
        file_args = [arg for path in self.files for arg in ("-f", path)]
        # The image's pip reaches PyPI through this host's network; `docker` format keeps the
        # Dockerfile's HEALTHCHECK (OCI images have none). Commands other than build ignore it.
        build_args = ["--podman-build-args", "--network=host --format=docker"]
        return [sys.executable, "-m", "podman_compose", *build_args, "--project-name", self.name,
                *file_args, *args]  # fmt: skip

    def __call__(self, *args: str, timeout: float = 900) -> str:
        return sh(self.args(*args), cwd=self.project.path, timeout=timeout, env=self.env)

    def down_quietly(self) -> None:
        """`down -v` that never fails: for cleanup, where a failure must not hide the test's."""
        subprocess.run(
            self.args("down", "-v"),
            cwd=self.project.path,
            env=engine_env(self.env),
            capture_output=True,
            timeout=180,
        )

    def container(self, service: str, number: int = 1) -> str:
        return f"{self.name}_{service}_{number}"

    def wait_healthy(self, service: str, number: int = 1, timeout: float = 120) -> None:
        """Run the container's own healthcheck (compose's or the image's) until it says healthy.

        podman runs healthchecks from systemd timers, and there is no systemd here, so the
        test runs each check itself with `podman healthcheck run` at a short interval.
        """
        name = self.container(service, number)
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


@contextmanager
def brought_up(compose: Compose, network: str, subnet: str, gateway: str) -> Iterator[None]:
    """Build and `up -d` the stack on a fresh `network`; `down -v` and remove it afterwards."""
    # Leftovers of an interrupted run would clash with the fixed names.
    compose.down_quietly()
    if podman_ok("network", "exists", network):
        podman("network", "rm", "-f", network)
    podman("network", "create", "--subnet", subnet, "--gateway", gateway, network)
    image = f"localhost/{compose.name}_bot"
    before = image_id(image)
    try:
        compose("build", timeout=1200)
        if before and before != image_id(image):
            podman_ok("rmi", before)  # the previous run's build, now untagged
        compose("up", "-d")
        yield
    finally:
        compose.down_quietly()
        podman_ok("network", "rm", "-f", network)


def image_id(image: str) -> str:
    done = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", image],
        env=engine_env(),
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def network_file(name: str) -> str:
    """The override's `networks:` part: the default network is the pre-created `name`."""
    return f"networks:\n  default:\n    name: {name}\n    external: true\n"


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
    """The baked project's own Bot API stand-in (the package `botnodes/testing/fake_bot_api/`),
    loaded from its files: this test process does not have the baked project installed."""
    package = project.path / "botnodes" / "testing" / "fake_bot_api"
    spec = importlib.util.spec_from_file_location(
        "compose_tier_fake_telegram",
        package / "__init__.py",
        submodule_search_locations=[str(package)],  # its modules import each other relatively
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def gateway_server(fake_telegram: ModuleType, gateway: str) -> Any:
    """The baked FakeBotAPIServer, listening on the compose network's gateway, not 127.0.0.1."""

    class GatewayBotAPIServer(fake_telegram.FakeBotAPIServer):  # type: ignore[misc,name-defined]
        @property
        def url(self) -> str:
            return f"http://{gateway}:{self.port}"

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
            sock.bind((gateway, 0))
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


def build_stand_in_images(project: BakedProject) -> None:
    """The base images the project's Dockerfile and compose files name, built locally once."""
    sh(["bash", str(IMAGES_DIR / "build.sh"), python_version(project)], timeout=1200)


def python_version(project: BakedProject) -> str:
    for line in (project.path / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("ARG PYTHON_VERSION="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("the Dockerfile has no ARG PYTHON_VERSION=")
