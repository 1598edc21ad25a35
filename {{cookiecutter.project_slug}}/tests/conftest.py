"""Shared fixtures (a real Redis, the bot's test client) and the suite's two tiers.

REDIS_URL points the suite at a running server; otherwise one throw-away `redis-server` from
PATH is started on a free port for the whole session. Tests never flush a database: each one
works under its own key prefix (`state_key`), so pointing REDIS_URL at a shared server is safe.

Tiers: plain `pytest` runs yours, the loop to run all day: the bot's nodes, texts, buttons
and flow through the test client (the files right in `tests/`). The library's tests
(`tests/botnodes/`: botnodes itself; `tests/runtime/`: the aiogram runtime driven through
this bot) and the ops tier (everything in `tests/ops/`, every test that starts a
`redis-server` of its own and every test marked `@pytest.mark.ops`: processes, outages, a
cluster) join them with `pytest --all`, as CI runs it. Naming a file or folder
(`pytest tests/runtime`), or giving a `-m` expression (`pytest -m ops`), runs what you asked.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import BlockingConnectionPool, Redis

from botnodes.telegram.settings import (
    RedisSettings,
    RuntimeSettings,
    StateSettings,
    TelegramSettings,
)
from botnodes.testing import BotTestClient, FakeBotAPIServer

from {{ cookiecutter.project_slug }}.food_api import FoodOrderError
from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.settings import FoodApiSettings, Settings

TESTS_DIR = Path(__file__).resolve().parent
OPS_DIR = TESTS_DIR / "ops"
#: The library's own tests: run by `pytest --all` (and CI), or when named.
LIBRARY_DIRS = (TESTS_DIR / "botnodes", TESTS_DIR / "runtime")
#: Fixtures that start redis-server processes of their own: their tests are in the ops tier.
SERVER_FIXTURES = frozenset({"start_redis", "redis_cluster_url"})

TOKEN = "123456:TEST-in-process-token"
#: The token of bot processes under test: long and unique, so a log line leaking it is found.
E2E_TOKEN = "987654:E2E-secret-token-must-never-be-logged"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all",
        action="store_true",
        help="also run the library's tests and the ops tier: bot processes, Redis outages, "
        "a cluster (CI runs this)",
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.getoption("--all"):
        return "tiers: all"
    if config.getoption("markexpr"):
        return None  # the -m expression chooses
    return "tiers: yours (pytest --all adds the library's tests and the ops tier)"


@pytest.hookimpl(tryfirst=True)  # before `-m` is applied, so `pytest -m ops` sees the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the ops tier; leave it and the library's tests out unless they were asked for."""
    for item in items:
        in_ops_dir = item.path.is_relative_to(OPS_DIR)
        if in_ops_dir or SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ops)
    if config.getoption("--all") or config.getoption("markexpr"):
        return
    named = named_paths(config)
    kept = [item for item in items if not is_left_out(item, named)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze the objects imports and collection made (aiogram's ~600 models among them).

    They live as long as the session, yet each full garbage collection walked them all again,
    about 0.2 s every time; frozen, collections during the tests skip them.
    """
    gc.collect()
    gc.freeze()


def named_paths(config: pytest.Config) -> list[Path]:
    """The files and folders given on the command line (not the default `testpaths`)."""
    if config.args_source is not pytest.Config.ArgsSource.ARGS:
        return []
    base = config.invocation_params.dir
    return [(base / arg.split("::")[0]).resolve() for arg in config.args]


def is_left_out(item: pytest.Item, named: list[Path]) -> bool:
    """An ops or library test stays out unless its file, or a folder of its tier, was named."""
    library = next((folder for folder in LIBRARY_DIRS if item.path.is_relative_to(folder)), None)
    if item.get_closest_marker("ops") is not None:
        tier = OPS_DIR
    elif library is not None:
        tier = library
    else:
        return False
    return not any(
        item.path.is_relative_to(path) and (path.is_file() or path.is_relative_to(tier))
        for path in named
    )


def free_port() -> int:
    """A TCP port that nothing listens on right now (good enough for test servers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a valid, free port too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class RedisServer:
    """A `redis-server` process of our own on 127.0.0.1, stoppable and restartable on its port."""

    def __init__(self, workdir: Path, port: int | None = None, *extra_args: str) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail(
                "redis-server is not on PATH and REDIS_URL is not set: install Redis "
                "(apt-get install redis-server) or set REDIS_URL=redis://host:port/db",
                pytrace=False,
            )
        self.executable = executable
        self.workdir = workdir
        self.port = port or (
            free_cluster_port() if "--cluster-enabled" in extra_args else free_port()
        )
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited at start on port {self.port}", pytrace=False)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        pytest.fail(
            f"redis-server did not answer PING on port {self.port} within 10s", pytrace=False
        )

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The server stops answering (SIGSTOP) until the block ends, however it ends: its
        sockets stay open and take commands, as a hung Redis does."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the Redis server the suite uses (REDIS_URL, else one started for the session)."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start private redis-server processes (outage and cluster tests); all stop afterwards."""
    started: list[RedisServer] = []

    def start(*extra_args: str, port: int | None = None) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", port, *extra_args)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_cluster_url(start_redis: Callable[..., RedisServer]) -> str:
    """A Redis Cluster of three redis-server primaries started for the test; its seed URL."""
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        pytest.fail("redis-cli is not on PATH: install redis-tools (apt-get)", pytrace=False)
    servers = [
        start_redis("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        for _ in range(3)
    ]
    addresses = [f"127.0.0.1:{server.port}" for server in servers]
    subprocess.run(
        [redis_cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    deadline = time.monotonic() + 30
    while True:
        info = subprocess.run(
            [redis_cli, "-p", str(servers[0].port), "cluster", "info"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if "cluster_state:ok" in info:
            return f"redis://127.0.0.1:{servers[0].port}"
        assert time.monotonic() < deadline, f"cluster never became ok:\n{info}"
        time.sleep(0.1)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    """A client for the suite's Redis, closed after the test.

    Its pool waits for a free connection: redis-py's default asyncio pool raises
    "Too many connections" past its limit instead, which a burst of events would hit.
    """
    client = Redis.from_pool(BlockingConnectionPool.from_url(redis_url, max_connections=50))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def state_key() -> str:
    """A key prefix no other test uses, so tests never need to flush the database."""
    return f"test_{uuid.uuid4().hex[:12]}"


def make_settings(state_key: str, state_ttl: float | None = None, **redis: Any) -> Settings:
    """Settings given explicitly, so neither the environment nor a `.env` can change them."""
    return Settings(
        telegram=TelegramSettings(bot_token=SecretStr(TOKEN), _env_file=None),
        redis=RedisSettings(_env_file=None, **redis),
        state=StateSettings(
            state_key=state_key, state_ttl=state_ttl, lock_wait_timeout=5, _env_file=None
        ),
        food_api=FoodApiSettings(url=None, _env_file=None),
        runtime=RuntimeSettings(_env_file=None),
    )


@pytest.fixture
def settings(state_key: str, redis_url: str) -> Settings:
    return make_settings(state_key, url=SecretStr(redis_url))


class RecordingFoodAPI:
    """Remembers orders and their idempotency keys; fails on demand like a real one must."""

    def __init__(self) -> None:
        self.orders: list[tuple[int, list[str]]] = []
        self.keys: list[str] = []
        self.fail = False

    async def order_food(self, user_id: int, items: Sequence[str], *, idempotency_key: str) -> None:
        if self.fail:
            raise FoodOrderError("food API answered HTTP 500")
        self.orders.append((user_id, list(items)))
        self.keys.append(idempotency_key)

    async def close(self) -> None:
        """Nothing to release."""


@pytest.fixture
def food_api() -> RecordingFoodAPI:
    return RecordingFoodAPI()


@pytest.fixture
async def client(
    settings: Settings, redis_client: Redis, food_api: RecordingFoodAPI
) -> AsyncIterator[BotTestClient]:
    """The bot in process (real dispatcher, nodes, botnodes, Redis) with a fake Telegram."""
    async with BotTestClient.start(BOT, settings, redis=redis_client, food_api=food_api) as client:
        yield client


@pytest.fixture
async def bot_api() -> AsyncIterator[FakeBotAPIServer]:
    """The Bot API stand-in over HTTP on 127.0.0.1, for bot processes (TELEGRAM_API_URL)."""
    server = FakeBotAPIServer(E2E_TOKEN)
    await server.start()
    yield server
    await server.close()
