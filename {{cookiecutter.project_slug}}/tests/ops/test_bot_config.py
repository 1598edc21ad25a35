"""Settings: every mistake stops start-up with one line naming the setting, never a secret."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from botnodes import MAX_TTL_SECONDS
from botnodes.telegram.app import secrets_of
from botnodes.telegram.logging_setup import MASK, RedactingFormatter
from botnodes.telegram.settings import ConfigError, load_settings
from botnodes.testing import BotTestClient, FakeBotAPIServer

from {{ cookiecutter.project_slug }}.settings import Settings

from ..conftest import E2E_TOKEN, RecordingFoodAPI, free_port
from .bot_process import SETTING_NAMES, BotProcess, bot_environment

PACKAGE = "{{ cookiecutter.project_slug }}"
TOKEN = "123456:SECRET-token-never-printed"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own settings must not decide these tests."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)


def config_error(env_file: Path | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(Settings, env_file)
    return str(caught.value)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_TOKEN", TOKEN)
    settings = load_settings(Settings, None)
    assert settings.telegram.bot_token.get_secret_value() == TOKEN
    assert settings.telegram.telegram_api_url is None
    assert settings.redis.url.get_secret_value() == "redis://localhost:6379/0"
    assert settings.redis.cluster is False
    assert settings.state.state_key == "nodes_state"
    assert settings.state.state_ttl is None
    assert settings.food_api.url is None
    assert settings.runtime.log_level == "INFO"


def test_missing_bot_token_names_it() -> None:
    assert config_error() == "BOT_TOKEN: is required (set it in the environment or in .env)"


#: Settings that are `SecretStr`: a refused value of theirs is never shown.
SECRET_SETTINGS = {"BOT_TOKEN", "REDIS_URL"}


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("BOT_TOKEN", "SECRET-no-colon", "must look like <digits>:<secret>"),
        ("REDIS_URL", "http://:SECRET-pw@redis:6379/0", "must start with redis://"),
        ("REDIS_URL", "redis://:SECRET-pw@", "must name a host"),
        ("REDIS_CLUSTER", "maybe", "valid boolean"),
        ("REDIS_MAX_CONNECTIONS", "many", "valid integer"),
        ("REDIS_MAX_CONNECTIONS", "0", "greater than or equal to 1"),
        ("STATE_TTL", "-5", "greater than 0"),
        ("LOCK_TTL", "long", "valid number"),
        ("FOOD_API_URL", "not a url", "valid URL"),
        ("TELEGRAM_API_URL", "ftp://host", "URL scheme should be 'http' or 'https'"),
        ("LOG_LEVEL", "LOUD", "'DEBUG', 'INFO'"),
        ("SHUTDOWN_TIMEOUT", "0", "greater than 0"),
    ],
)
def test_malformed_setting_names_the_setting_the_rule_and_a_value_that_is_no_secret(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, rule: str
) -> None:
    monkeypatch.setenv("BOT_TOKEN", TOKEN)
    monkeypatch.setenv(name, value)
    message = config_error()
    assert message.startswith(f"{name}: ")
    assert rule in message
    if name in SECRET_SETTINGS:
        assert "SECRET" not in message
        assert "(got" not in message
    else:
        assert message.endswith(f" (got {value!r})")
    assert "\n" not in message


def test_a_refused_value_is_shown_escaped_and_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line break in a value can't forge a second line; a pasted blob stays one short line."""
    monkeypatch.setenv("BOT_TOKEN", TOKEN)
    monkeypatch.setenv("LOCK_TTL", "5\nCRITICAL forged")
    assert config_error().endswith(" (got '5\\nCRITICAL forged')")
    monkeypatch.setenv("LOCK_TTL", "x" * 500)
    message = config_error()
    assert message.endswith(f" (got '{'x' * 60}...')")
    assert len(message) < 200


def test_dotenv_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"BOT_TOKEN={TOKEN}\nSTATE_KEY=from_dotenv\nREDIS_MAX_CONNECTIONS=7\n"
        "STATE_TTL=\nLOG_LEVEL=debug\n"
    )
    monkeypatch.setenv("REDIS_MAX_CONNECTIONS", "9")
    settings = load_settings(Settings, env_file)
    assert settings.telegram.bot_token.get_secret_value() == TOKEN
    assert settings.state.state_key == "from_dotenv"
    assert settings.redis.max_connections == 9
    assert settings.state.state_ttl is None  # an empty value means "not set"
    assert settings.runtime.log_level == "DEBUG"


def test_secrets_stay_out_of_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_TOKEN", TOKEN)
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2-password@redis:6379/0")
    settings = load_settings(Settings, None)
    assert TOKEN not in repr(settings)
    assert "hunter2" not in repr(settings)
    assert secrets_of(settings) == [TOKEN, "hunter2-password"]


def test_log_formatter_masks_secrets_in_messages_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(message)s", [TOKEN, ""]))
    log = logging.getLogger("test_bot_config.redaction")
    log.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"GET https://api.telegram.org/bot{TOKEN}/getMe failed")
        except RuntimeError:
            log.exception("request to /bot%s/getMe failed", TOKEN)
    finally:
        log.removeHandler(handler)
    output = stream.getvalue()
    assert TOKEN not in output
    assert output.count(MASK) == 2


def run_cli(tmp_path: Path, settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", PACKAGE],
        cwd=tmp_path,
        env=bot_environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_without_bot_token_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    result = run_cli(tmp_path, {})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Configuration error: BOT_TOKEN: is required (set it in the environment or in .env)\n"
    )


def test_cli_with_a_malformed_secret_never_prints_it(tmp_path: Path) -> None:
    result = run_cli(tmp_path, {"BOT_TOKEN": TOKEN, "REDIS_URL": "redis//:SECRET-pw@host"})
    assert result.returncode == 2
    assert result.stderr.startswith("Configuration error: REDIS_URL: ")
    assert result.stderr.count("\n") == 1
    assert "SECRET" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_cli_with_an_unreachable_bot_api_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    result = run_cli(
        tmp_path,
        {"BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": f"http://127.0.0.1:{closed}"},
    )
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()  # nothing before it: the bot never started polling
    assert line.startswith(
        f"Cannot start: getMe failed at the Bot API (http://127.0.0.1:{closed}/)"
    )
    assert TOKEN not in result.stderr


async def test_cli_with_no_redis_reachable_prints_one_line_and_exits_1(
    bot_api: FakeBotAPIServer, tmp_path: Path
) -> None:
    closed = free_port()  # nothing listens there
    settings = {
        "BOT_TOKEN": E2E_TOKEN,
        "TELEGRAM_API_URL": bot_api.url,
        "REDIS_URL": f"redis://:SECRET-pw@127.0.0.1:{closed}/0",
    }
    bot = BotProcess(PACKAGE, settings, tmp_path)
    await bot.start()
    try:
        assert await bot.wait() == 1
    finally:
        await bot.kill()
    [line] = bot.log().splitlines()
    assert line.startswith(f"Cannot start: Redis at 127.0.0.1:{closed} does not answer PING: ")
    assert "SECRET" not in line
    assert bot_api.calls("getUpdates") == []  # no update was taken


def test_cli_reads_dotenv_from_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"BOT_TOKEN={TOKEN}\nLOG_LEVEL=chatty\n")
    result = run_cli(tmp_path, {})
    assert result.returncode == 2
    assert result.stderr.startswith("Configuration error: LOG_LEVEL: ")


def test_env_example_lists_every_setting_with_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    names = {
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert names == set(SETTING_NAMES)
    monkeypatch.setenv("BOT_TOKEN", TOKEN)
    assert load_settings(Settings, example) == load_settings(Settings, None)


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("LOCK_TTL", "inf", "finite number"),
        ("LOCK_TTL", "nan", "finite number"),
        ("LOCK_TTL", "1e17", "less than or equal to 9000000000000000"),
        ("STATE_TTL", "1e17", "less than or equal to 9000000000000000"),
        ("LOCK_WAIT_TIMEOUT", "inf", "finite number"),
        ("SHUTDOWN_TIMEOUT", "-inf", "finite number"),
        ("STATE_KEY", "food{bot}", "must not contain { or }"),
    ],
)
def test_cli_refuses_what_botnodes_and_redis_refuse_in_one_line(
    tmp_path: Path, name: str, value: str, rule: str
) -> None:
    result = run_cli(tmp_path, {"BOT_TOKEN": TOKEN, name: value})
    assert result.returncode == 2
    assert result.stderr.startswith(f"Configuration error: {name}: ")
    assert rule in result.stderr
    assert result.stderr.count("\n") == 1


def test_the_largest_ttl_the_settings_take_is_one_redis_takes(redis_url: str) -> None:
    # MAX_TTL_SECONDS, as milliseconds, is an expiry Redis accepts (and 1e17 s is not).
    client = redis_sync.Redis.from_url(redis_url)
    try:
        key = f"ttl-probe-{uuid.uuid4().hex}"
        assert client.set(key, "x", px=int(MAX_TTL_SECONDS * 1000))
        with pytest.raises(redis_sync.ResponseError):
            client.set(key, "x", px=int(1e17 * 1000))
        client.delete(key)
    finally:
        client.close()


GARBAGE_ANSWERS = {
    "bad-status-line": b"HELLO /bot{token}/getMe garbage\r\n\r\n",
    "malformed-headers": b"HTTP/1.1 200 OK\r\nContent-Length: /bot{token}/getMe\r\n\r\n",
    "redirect-loop": (
        b"HTTP/1.1 302 Found\r\nLocation: /bot{token}/getMe\r\nContent-Length: 0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("answer", GARBAGE_ANSWERS.values(), ids=GARBAGE_ANSWERS.keys())
def test_a_bot_api_answering_garbage_never_gets_the_token_printed(
    tmp_path: Path, answer: bytes
) -> None:
    with garbage_server(answer.replace(b"{token}", TOKEN.encode())) as port:
        result = run_cli(
            tmp_path, {"BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": f"http://127.0.0.1:{port}"}
        )
    assert result.returncode == 1
    output = result.stderr + result.stdout
    assert TOKEN.split(":")[1] not in output
    assert "Traceback" not in output
    [line] = [x for x in result.stderr.splitlines() if x.startswith("Cannot start: getMe failed")]
    assert "***" in line or "/bot" not in line


@contextlib.contextmanager
def garbage_server(answer: bytes) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers every request with `answer` and hangs up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2)
                with contextlib.suppress(OSError):
                    connection.recv(65536)
                    connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        server.close()


async def test_a_newline_in_user_text_cannot_forge_a_log_record(
    client: BotTestClient, food_api: RecordingFoodAPI
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s", [TOKEN]))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        alice = client.user(1001)
        await alice.send("hi")
        await alice.send("Yes")
        await alice.send("Tea\nCRITICAL forged: the bot was hacked\r\x1b[2J")
        food_api.fail = True
        await alice.send("Finish")  # Hungry logs the failed order with its items
    finally:
        root.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert not any(line.startswith("CRITICAL") for line in lines)
    [order_line] = [line for line in lines if "failed: food API answered HTTP 500" in line]
    assert "Tea\\nCRITICAL forged: the bot was hacked\\r\\x1b[2J" in order_line


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (
            {"WEBHOOK_URL": "https://bot.example.com/hook"},
            "Configuration error: WEBHOOK_SECRET: is required when WEBHOOK_URL is set",
        ),
        (
            {"WEBHOOK_URL": "http://bot.example.com/hook", "WEBHOOK_SECRET": "s3cret"},
            "Configuration error: WEBHOOK_URL: must be an https:// URL",
        ),
        (
            {"WEBHOOK_URL": "https://bot.example.com/hook", "WEBHOOK_SECRET": "no spaces!"},
            "Configuration error: WEBHOOK_SECRET: must be 1 to 256 characters of A-Z",
        ),
        ({"METRICS_PORT": "70000"}, "Configuration error: METRICS_PORT: "),
    ],
    ids=["secret-missing", "not-https", "secret-shape", "metrics-port"],
)
def test_webhook_settings_are_refused_in_one_line(
    tmp_path: Path, settings: dict[str, str], line: str
) -> None:
    result = run_cli(tmp_path, {"BOT_TOKEN": TOKEN, **settings})
    assert result.returncode == 2
    assert result.stderr.startswith(line)
    assert result.stderr.count("\n") == 1
    assert "no spaces!" not in result.stderr
