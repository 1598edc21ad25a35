"""The webhook profile for real: docker-compose.yml + docker-compose.webhook.yml under podman.

Two bot replicas in webhook mode behind Caddy, with the shipped Caddyfile, brought up as the
compose file's header says (`DOMAIN=... docker compose -f docker-compose.yml -f
docker-compose.webhook.yml up -d`). The override changes only what must differ here: the Bot
API URL (the fake Bot API on the compose network's gateway), the pre-created network, and
Caddy's published port (a free port on 127.0.0.1 instead of this host's 80 and 443). DOMAIN is
`localhost`, for which Caddy issues the certificate from its own local CA instead of Let's
Encrypt, which is unreachable here; the test trusts that CA and nothing else.

The test delivers updates to Caddy over HTTPS as Telegram does (the secret header, the path
the bot registered with setWebhook, and a new delivery after a failed one) and checks the
replies, that both replicas took updates, that a wrong secret is refused and that Caddy passes
on nothing but the webhook path. Then each replica in turn is stopped or restarted in the middle
of a cart: the conversation goes on with nothing lost and nothing twice.

The base images are local stand-ins (tests/container_images/build.sh), not the official
python, redis and caddy images. Opt out with COMPOSE_TIER=0, as for test_compose_up.py.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
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

PROJECT = "foodbot_webhooktest"
NETWORK = "foodbot-webhooktest"
SUBNET = "10.213.78.0/24"
GATEWAY = "10.213.78.1"  # this host's address on NETWORK: where the fake Bot API listens
FILES = ["docker-compose.yml", "docker-compose.webhook.yml"]
DOMAIN = "localhost"
SECRET = "compose-webhook-secret_7"
UPDATES_PATH = "/telegram/updates"
CADDY_ROOT_CA = "/data/caddy/pki/authorities/local/root.crt"
#: What `post` returns when a delivery got no answer in 30 s (no HTTP status at all).
NO_ANSWER = 0
ALICE = 5001
BOB = 5002
GREETING = "Hello, alice! Are you hungry?"
MAIN_MENU = "Again main menu! Are you hungry?"


@dataclass
class WebhookStack:
    compose: Compose
    api: Any  # the baked project's FakeBotAPIServer, on the gateway
    loop: LoopThread
    port: int  # Caddy's HTTPS port on 127.0.0.1
    fake_telegram: Any  # the baked fake_bot_api module (update builders)
    tls: ssl.SSLContext | None = None
    #: Statuses of deliveries that were not 200 (Telegram would deliver those again).
    failed_deliveries: list[int] = field(default_factory=list)

    def post(self, update: dict[str, Any], secret: str = SECRET, path: str = UPDATES_PATH) -> int:
        """POST an update to Caddy as Telegram does; returns the HTTP status."""
        assert self.tls is not None, "trust Caddy's CA first (caddy_tls)"
        request = urllib.request.Request(
            f"https://{DOMAIN}:{self.port}{path}",
            data=json.dumps(update).encode(),
            headers={
                "Content-Type": "application/json",
                "X-Telegram-Bot-Api-Secret-Token": secret,
            },
            method="POST",
        )
        # Straight to Caddy, whatever proxy this machine's environment names.
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self.tls)
        )
        try:
            with opener.open(request, timeout=30) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except (TimeoutError, urllib.error.URLError) as error:
            # No answer in time: Telegram gives up on the delivery and sends it again later.
            if isinstance(error, urllib.error.URLError) and not isinstance(
                error.reason, TimeoutError
            ):
                raise
            return NO_ANSWER

    def deliver(self, update: dict[str, Any], attempts: int = 15) -> None:
        """Deliver an update as Telegram does: until a replica answers 200, again after a pause."""
        for _ in range(attempts):
            status = self.post(update)
            if status == 200:
                return
            self.failed_deliveries.append(status)
            time.sleep(1)
        caddy_log = container_log(self.compose.container("caddy"))
        pytest.fail(f"{attempts} deliveries failed ({self.failed_deliveries}); Caddy's log:\n"
                    f"{caddy_log[-3000:]}")  # fmt: skip

    def say(self, user_id: int, text: str, expect: int, username: str = "alice") -> list[str]:
        """Send a message through Caddy and return the next `expect` texts the bot sends."""
        before = len(self.api.sent_texts(user_id))
        update = self.fake_telegram.message_update(
            self.api.next_update_id(), user_id, text, username=username
        )
        self.deliver(update)

        async def replies() -> list[str]:
            await self.api.wait_for(
                lambda: len(self.api.sent_texts(user_id)) >= before + expect,
                30.0,
                f"{expect} answer(s) to {text!r}",
            )
            return list(self.api.sent_texts(user_id)[before:])

        return self.loop.run(replies(), timeout=60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Iterator[WebhookStack]:
    """A default bake's webhook profile brought up with `compose up -d`, and its fake Bot API."""
    require_engine()
    project = bake_into(tmp_path_factory.mktemp("webhook"), cookiecutter_config, {})
    build_stand_in_images(project)

    # The compose file's header: WEBHOOK_SECRET in .env, DOMAIN given to compose.
    (project.path / ".env").write_text(
        f"BOT_TOKEN={TOKEN}\nWEBHOOK_SECRET={SECRET}\n", encoding="utf-8"
    )

    loop = LoopThread()
    fake_telegram = load_fake_telegram(project)
    api = gateway_server(fake_telegram, GATEWAY)
    loop.run(api.start())
    port = free_port()
    override = tmp_path_factory.mktemp("override") / "compose.override.yml"
    override.write_text(
        "services:\n"
        "  bot:\n"
        "    environment:\n"
        f"      TELEGRAM_API_URL: {api.url}\n"
        "  caddy:\n"
        "    ports: !override\n"
        f'      - "127.0.0.1:{port}:443"\n' + network_file(NETWORK),
        encoding="utf-8",
    )
    compose = Compose(project, PROJECT, FILES, override, env={"DOMAIN": DOMAIN})
    try:
        with brought_up(compose, NETWORK, SUBNET, GATEWAY):
            yield WebhookStack(compose, api, loop, port, fake_telegram)
    finally:
        loop.run(api.close())
        loop.stop()


def caddy_tls(stack: WebhookStack, timeout: float = 60) -> ssl.SSLContext:
    """Trust only the root of Caddy's local CA, once Caddy has made it and serves HTTPS."""
    caddy = stack.compose.container("caddy")
    deadline = time.monotonic() + timeout
    while True:
        if podman_ok("exec", caddy, "test", "-s", CADDY_ROOT_CA):
            root = podman("exec", caddy, "cat", CADDY_ROOT_CA)
            tls = ssl.create_default_context(cadata=root)
            try:
                stack.tls = tls
                stack.post({}, path="/")
                return tls
            except (OSError, ssl.SSLError):
                stack.tls = None
        if time.monotonic() > deadline:
            pytest.fail(
                f"Caddy serves no HTTPS after {timeout}s; its log:\n{container_log(caddy)[-3000:]}"
            )
        time.sleep(1)


def handled_by(stack: WebhookStack, number: int) -> int:
    """How many updates replica `number` handled, from its log (aiogram logs each one)."""
    log = container_log(stack.compose.container("bot", number))
    return sum("is handled" in line for line in log.splitlines())


def test_both_replicas_become_ready_and_register_the_webhook(stack: WebhookStack) -> None:
    compose = stack.compose
    compose.wait_healthy("redis")
    # The image's HEALTHCHECK asks each replica's /readyz: Redis answers and the webhook is set.
    compose.wait_healthy("bot", 1)
    compose.wait_healthy("bot", 2)
    assert podman_ok("container", "exists", compose.container("caddy"))
    assert not podman_ok("container", "exists", compose.container("bot", 3))
    for number in (1, 2):
        assert podman("exec", compose.container("bot", number), "id", "-u").strip() == "10001"

    registered = [call.params for call in stack.api.calls("setWebhook")]
    assert len(registered) == 2, registered  # once by each replica
    for params in registered:
        assert params["url"] == f"https://{DOMAIN}{UPDATES_PATH}"
        assert params["secret_token"] == SECRET
    assert not stack.api.calls("getUpdates"), "a replica in webhook mode polled"
    assert not stack.api.calls("deleteWebhook")

    # Neither the token nor the webhook secret is in the image or a replica's log.
    image = podman("image", "inspect", f"localhost/{PROJECT}_bot")
    for secret in (TOKEN, SECRET):
        assert secret not in image
        assert secret not in container_log(compose.container("bot", 1))
        assert secret not in container_log(compose.container("bot", 2))


def test_food_flow_through_caddy_over_https_on_both_replicas(stack: WebhookStack) -> None:
    compose = stack.compose
    compose.wait_healthy("bot", 1)
    compose.wait_healthy("bot", 2)
    caddy_tls(stack)

    assert stack.say(ALICE, "hi", 1) == [GREETING]
    assert stack.say(ALICE, "Yes", 2) == [
        "No worries, I've got you back!",
        "What are you gonna order? Cart: Empty",
    ]
    for dish, cart in (
        ("Pizza", "Pizza"),
        ("Cola", "Pizza, Cola"),
        ("Salad", "Pizza, Cola, Salad"),
    ):
        assert stack.say(ALICE, dish, 2) == [
            f"Added {dish}",
            f"What are you gonna order? Cart: {cart}",
        ]
    assert stack.say(ALICE, "Finish", 3) == ["Ordering Pizza, Cola, Salad", "Ordered!", MAIN_MENU]

    # Caddy spread the six updates over both replicas; they share the state in Redis.
    counts = [handled_by(stack, 1), handled_by(stack, 2)]
    assert sum(counts) == 6, counts
    assert min(counts) >= 1, f"one replica took every update: {counts}"

    # A POST without the right secret is refused by the replica, and nobody is answered.
    sent = len(stack.api.sent_texts())
    update = stack.fake_telegram.message_update(stack.api.next_update_id(), BOB, "hi")
    assert stack.post(update, secret="not-the-secret") == 401
    # Caddy passes on the webhook path only: the replicas' /metrics and /readyz stay inside.
    assert stack.post({}, path="/metrics") == 404
    assert stack.post({}, path="/readyz") == 404
    time.sleep(1)
    assert len(stack.api.sent_texts()) == sent


def test_replicas_stopped_or_restarted_mid_cart_lose_nothing_then_down_v_cleans_up(
    stack: WebhookStack,
) -> None:
    compose = stack.compose
    compose.wait_healthy("bot", 1)
    compose.wait_healthy("bot", 2)
    caddy_tls(stack)
    first, second = compose.container("bot", 1), compose.container("bot", 2)

    assert stack.say(BOB, "hi", 1, username="bob") == ["Hello, bob! Are you hungry?"]
    assert stack.say(BOB, "Yes", 2, username="bob") == [
        "No worries, I've got you back!",
        "What are you gonna order? Cart: Empty",
    ]
    # One replica stops (a deploy, a crash): the other takes Bob's updates, cart and all.
    podman("stop", first, timeout=60)
    assert stack.say(BOB, "Cola", 2, username="bob") == [
        "Added Cola",
        "What are you gonna order? Cart: Cola",
    ]
    podman("start", first)
    compose.wait_healthy("bot", 1)
    # The other one restarts while Bob goes on.
    podman("restart", second, timeout=60)
    assert stack.say(BOB, "Pizza", 2, username="bob") == [
        "Added Pizza",
        "What are you gonna order? Cart: Cola, Pizza",
    ]
    compose.wait_healthy("bot", 2)
    assert stack.say(BOB, "Finish", 3, username="bob") == [
        "Ordering Cola, Pizza",
        "Ordered!",
        MAIN_MENU,
    ]
    # Deliveries that failed were Caddy's 502 for a replica that was away (or, rarely, no
    # answer from a connection Caddy kept to the restarted one), never a replica's error:
    # Telegram's next delivery of the same update was then handled once.
    assert set(stack.failed_deliveries) <= {502, NO_ANSWER}, stack.failed_deliveries
    time.sleep(1)  # a late duplicate would show up here
    assert len(stack.api.sent_texts(BOB)) == 10, stack.api.sent_texts(BOB)

    # `down -v` removes every container and volume of the stack.
    compose("down", "-v", timeout=180)
    for volume in ("redis-data", "caddy-data", "caddy-config"):
        assert not podman_ok("volume", "exists", f"{PROJECT}_{volume}")
    for container in (first, second, compose.container("caddy"), compose.container("redis")):
        assert not podman_ok("container", "exists", container)
