"""`python -m <bot> chat`: the real bot in a terminal, through a pipe and a pseudo-terminal.

No BOT_TOKEN, no Telegram, no network: only Redis (the suite's, or one chat starts itself).
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from ..conftest import free_port
from .bot_process import bot_environment

PACKAGE = "{{ cookiecutter.project_slug }}"


def chat(
    tmp_path: Path, lines: str, *options: str, **settings: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", PACKAGE, "chat", "--name", "alice", *options],
        input=lines,
        cwd=tmp_path,
        env=bot_environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


Talk = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def talk(tmp_path: Path, redis_url: str, state_key: str) -> Talk:
    """`talk(lines, **settings)`: a piped chat on the suite's Redis, under this test's key."""

    def _talk(lines: str, *options: str, **settings: str) -> subprocess.CompletedProcess[str]:
        return chat(tmp_path, lines, *options, REDIS_URL=redis_url, STATE_KEY=state_key, **settings)

    return _talk


def test_a_piped_chat_walks_the_food_flow_with_buttons_and_text(talk: Talk) -> None:
    result = talk("hi\n:1\nPizza\n:node\n:1\n:2\n", LOG_LEVEL="WARNING")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2:] == [
        "you> hi",
        "bot> Hello, alice! Are you hungry?",
        "     [1] Yes  [2] No",
        "you> :1",
        "bot> No worries, I've got you back!",
        "bot> What are you gonna order? Cart: Empty",
        "     [1] Finish  [2] Cancel",
        "you> Pizza",
        "bot> Added Pizza",
        "bot> What are you gonna order? Cart: Pizza",
        "     [1] Finish  [2] Cancel",
        "you> :node",
        '(on Hungry: {"order": ["Pizza"], "reminded": false})',
        "you> :1",
        "bot> Ordering Pizza",
        "bot> Ordered!",
        "bot> Again main menu! Are you hungry?",
        "     [1] Yes  [2] No",
        "you> :2",
        "bot> Write me when you are ready then!",
    ]
    assert lines[0].startswith("Using a throw-away redis-server at redis://127.0.0.1:")
    assert lines[1].startswith("Chatting with the bot as alice (user 1)")


def test_chat_commands_switch_user_reset_and_refuse_missing_buttons(talk: Talk) -> None:
    result = talk(
        "hi\n:9\n:user 2\n:node\nhi\n:user 1\n:reset\n:node\nYes\n:what\n:quit\nnever read\n"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "(there is no button 9; the latest buttons are ['Yes', 'No'])" in out
    assert "(now talking as user 2, user2)" in out
    assert "(no node yet: your next message meets the start node)" in out
    # User 2 has a name of their own: the bot greets them, not alice.
    assert out.split("you> hi\n")[2].startswith("bot> Hello, user2! Are you hungry?")
    assert "(forgotten: your next message starts over)" in out
    # After :reset, "Yes" is a first message again: the greeting, not the cart.
    assert out.split("you> Yes\n")[1].startswith("bot> Hello, alice! Are you hungry?")
    assert "(unknown command :what; :help lists them)" in out
    assert "never read" not in out


def test_a_button_of_an_older_message_is_pressed_and_answered_out_of_date(talk: Talk) -> None:
    result = talk("hi\n:1\n:buttons\n:press 1 2\n:press 3 1\n:press x\n:node\n")
    assert result.returncode == 0, result.stderr
    after = result.stdout.split("you> :buttons\n")[1].splitlines()
    assert after == [
        "(1) Hello, alice! Are you hungry?  [1] Yes  [2] No",
        "(2) What are you gonna order? Cart: Empty  [1] Finish  [2] Cancel",
        "you> :press 1 2",
        "     (This menu is out of date.)",
        "you> :press 3 1",
        "(there is no button 1 on message 3; :buttons lists them)",
        "you> :press x",
        "(:press takes two numbers: the message of :buttons, then the button)",
        "you> :node",
        '(on Hungry: {"order": [], "reminded": false})',
    ]


def test_a_bad_setting_stops_chat_with_the_line_run_prints(tmp_path: Path) -> None:
    chatted = chat(tmp_path, "hi\n", STATE_TTL="abc")
    ran = subprocess.run(
        [sys.executable, "-m", PACKAGE, "run"],
        cwd=tmp_path,
        env=bot_environment({"STATE_TTL": "abc", "BOT_TOKEN": "123:never-used"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line = "Configuration error: STATE_TTL: Input should be a valid number, unable to parse string "
    assert ran.stderr == chatted.stderr == f"{line}as a number (got 'abc')\n"
    assert (chatted.returncode, chatted.stdout) == (ran.returncode, "") == (2, "")


def test_chat_never_touches_the_bots_redis_unless_asked(
    talk: Talk, redis_url: str, state_key: str
) -> None:
    """The chat's made-up users must not land among the real ones (a broadcast reaches them)."""
    result = talk("hi\n")
    assert result.returncode == 0, result.stderr
    [notice] = [line for line in result.stdout.splitlines() if "redis" in line.lower()]
    assert notice.startswith("Using a throw-away redis-server at ")
    assert "bot> Hello, alice! Are you hungry?" in result.stdout
    bots_redis = redis.Redis.from_url(redis_url)
    try:
        assert list(bots_redis.scan_iter(match=f"{state_key}*", count=1000)) == []
        asked = talk("hi\n", "--redis-from-env")
        assert asked.returncode == 0, asked.stderr
        port = redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0]
        assert f"Using the Redis of REDIS_URL (127.0.0.1:{port})" in asked.stdout
        assert list(bots_redis.scan_iter(match=f"{state_key}*", count=1000)) != []
    finally:
        bots_redis.close()


def test_without_redis_or_redis_server_chat_says_in_one_line_what_to_do(tmp_path: Path) -> None:
    env = bot_environment({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    env["PATH"] = str(Path(sys.executable).parent)  # no redis-server there
    result = subprocess.run(
        [sys.executable, "-m", PACKAGE, "chat"],
        input="hi\n",
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "chat starts a throw-away redis-server and there is none on PATH: install Redis "
        "(apt-get install redis-server, brew install redis), or use --redis-from-env to "
        "chat on the Redis of REDIS_URL"
    )


def test_chat_in_a_terminal_prompts_and_ends_at_ctrl_d(
    tmp_path: Path, redis_url: str, state_key: str
) -> None:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", PACKAGE, "chat", "--name", "alice"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=tmp_path,
        env=bot_environment(
            {"REDIS_URL": redis_url, "STATE_KEY": state_key, "LOG_LEVEL": "WARNING"}
        ),
    )
    os.close(follower)
    try:
        screen = read_until(leader, "you> ")
        os.write(leader, b"hi\n")
        screen = read_until(leader, "you> ")
        assert "Hello, alice! Are you hungry?" in screen
        assert "[1] Yes  [2] No" in screen
        os.write(leader, b":1\n")
        screen = read_until(leader, "you> ")
        assert "What are you gonna order? Cart: Empty" in screen
        os.write(leader, b"\x04")  # Ctrl+D: end of input
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)


def read_until(fd: int, text: str, timeout: float = 30.0) -> str:
    """Read the terminal until `text` appears; everything read so far."""
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{text!r} never appeared; the terminal showed:\n{seen!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            seen += os.read(fd, 4096)
    return seen.decode(errors="replace")


def test_chat_in_a_terminal_edits_lines_keeps_logs_out_and_ends_at_ctrl_c(
    tmp_path: Path, redis_url: str, state_key: str
) -> None:
    log = tmp_path / "chat.log"
    settings = {"REDIS_URL": redis_url, "STATE_KEY": state_key, "LOG_LEVEL": "INFO"}
    # A child of pty.fork has the terminal as its controlling terminal, as in a real shell:
    # only there does Ctrl+C become SIGINT.
    pid, terminal = pty.fork()
    if pid == 0:  # the child: become the chat
        os.chdir(tmp_path)
        args = [sys.executable, "-m", PACKAGE, "chat", "--log", str(log)]
        os.execve(sys.executable, args, bot_environment(settings))  # noqa: S606
    try:
        screen = read_until(terminal, "you> ", timeout=60)  # a loaded machine starts slowly
        assert f"Log lines go to {log}" in screen
        for line in ("hi", ":1", "Pizza", ":1"):  # Yes, then Finish: the food API logs the order
            os.write(terminal, f"{line}\r".encode())
            screen = read_until(terminal, "you> ")
        assert "bot> Ordered!" in screen
        assert "Again main menu! Are you hungry?" in screen
        assert " INFO " not in screen
        assert "Order " not in screen  # the food API's log line, which went to the file
        assert f"INFO {PACKAGE}.food_api: Order " in log.read_text(encoding="utf-8")
        os.write(terminal, b"\x1b[A\r")  # up arrow: ":1" again, i.e. Yes on the menu
        screen = read_until(terminal, "you> ")
        assert "bot> No worries, I've got you back!" in screen
        assert "Say what?" not in screen
        # One line at a time, each read up to its own prompt: a read up to the greeting
        # could already hold the prompt after it, and the next wait would find none.
        os.write(terminal, b":user 2\r")
        assert "(now talking as user 2, user2)" in read_until(terminal, "you> ")
        os.write(terminal, b"hi\r")
        screen = read_until(terminal, "you> ")
        assert "bot> Hello, user2! Are you hungry?" in screen
        wait_until_waiting_for_a_key(pid)
        started = time.monotonic()
        os.write(terminal, b"\x03")  # Ctrl+C
        status = wait_for_exit(pid, timeout=10)
        # Typically well under a second; a loaded CI machine needs longer to unload the bot.
        assert time.monotonic() - started < 5, "Ctrl+C took too long to end the chat"
        assert os.waitstatus_to_exitcode(status) == 130
    finally:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        os.close(terminal)


def wait_until_waiting_for_a_key(pid: int, timeout: float = 10.0) -> None:
    """Return once the chat's main thread sleeps in readline's wait for a key.

    The prompt is printed just before that wait begins. Python's readline notices a Ctrl+C
    only while it waits (the signal interrupts the wait), so one that lands in between is
    seen at the next key press: no person is that fast, but a test is. Linux shows where a
    thread sleeps in /proc; elsewhere a person's half second stands in.
    """
    wchan = Path(f"/proc/{pid}/wchan")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sleeping_in = wchan.read_text()
        except OSError:
            break
        if sleeping_in in {"", "0"}:  # this kernel doesn't say
            break
        if sleeping_in.startswith(("poll_schedule_timeout", "do_select", "do_sys_poll")):
            return
        time.sleep(0.01)
    time.sleep(0.5)


def wait_for_exit(pid: int, timeout: float) -> int:
    """The wait status of child `pid`, which must end within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    raise AssertionError(f"the chat (pid {pid}) still runs {timeout} s later")


def test_each_chat_starts_its_own_log(talk: Talk, tmp_path: Path) -> None:
    """`:log` shows this chat's lines, not those of a chat before it."""
    log = tmp_path / "chat.log"
    log.write_text("INFO an earlier chat's line\n", encoding="utf-8")
    result = talk("hi\n", "--log", str(log), LOG_LEVEL="INFO")
    assert result.returncode == 0, result.stderr
    assert "an earlier chat's line" not in log.read_text(encoding="utf-8")


def test_a_piped_chat_with_payments_in_the_environment_shows_the_invoice_and_pays_it(
    talk: Talk,
) -> None:
    token = "284685063:TEST:chat-provider-token-never-shown"
    result = talk(
        "hi\n:1\nPizza\n:1\n:pay\n:pay\n",
        PAYMENTS="provider",
        PAYMENT_PROVIDER_TOKEN=token,
        PAYMENT_CURRENCY="EUR",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    finished = lines.index("you> :1", lines.index("you> Pizza"))
    assert lines[finished + 1 :] == [
        "bot> Ordering Pizza",
        "bot> Invoice: Your food order (100 EUR)",
        "bot> To pay 1.00 EUR, press Pay on the invoice above. Cancel drops the order.",
        "     [1] Cancel",
        "you> :pay",
        "bot> Ordered!",
        "bot> Again main menu! Are you hungry?",
        "     [1] Yes  [2] No",
        "you> :pay",
        "(Telegram shows: This invoice is already paid.)",
    ]
    assert token not in result.stdout + result.stderr
