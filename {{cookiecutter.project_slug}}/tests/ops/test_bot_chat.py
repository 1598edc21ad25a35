"""`python -m <bot> chat`: the real bot in a terminal, through a pipe and a pseudo-terminal.

No BOT_TOKEN, no Telegram, no network: only Redis (the suite's, or one chat starts itself).
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from ..conftest import free_port
from .bot_process import bot_environment

PACKAGE = "{{ cookiecutter.project_slug }}"


def chat(tmp_path: Path, lines: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", PACKAGE, "chat", "--name", "alice"],
        input=lines,
        cwd=tmp_path,
        env=bot_environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_piped_chat_walks_the_food_flow_with_buttons_and_text(
    tmp_path: Path, redis_url: str, state_key: str
) -> None:
    result = chat(
        tmp_path,
        "hi\n:1\nPizza\n:node\n:1\n:2\n",
        REDIS_URL=redis_url,
        STATE_KEY=state_key,
        LOG_LEVEL="WARNING",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1:] == [
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
        '(on Hungry, visit 3: {"order": ["Pizza"]})',
        "you> :1",
        "bot> Ordering Pizza",
        "bot> Ordered!",
        "bot> Again main menu! Are you hungry?",
        "     [1] Yes  [2] No",
        "you> :2",
        "bot> Write me when you are ready then!",
    ]
    assert lines[0].startswith("Chatting with the bot as alice (user 1)")


def test_chat_commands_switch_user_reset_and_refuse_missing_buttons(
    tmp_path: Path, redis_url: str, state_key: str
) -> None:
    result = chat(
        tmp_path,
        "hi\n:9\n:user 2\n:node\nhi\n:user 1\n:reset\n:node\nYes\n:what\n:quit\nnever read\n",
        REDIS_URL=redis_url,
        STATE_KEY=state_key,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "(there is no button 9; the latest buttons are ['Yes', 'No'])" in out
    assert "(now talking as user 2)" in out
    assert "(no node yet: your next message meets the start node)" in out
    assert "(forgotten: your next message starts over)" in out
    # After :reset, "Yes" is a first message again: the greeting, not the cart.
    assert out.split("you> Yes\n")[1].startswith("bot> Hello, alice! Are you hungry?")
    assert "(unknown command :what; :help lists them)" in out
    assert "never read" not in out


def test_without_redis_chat_starts_a_throwaway_server_and_says_so(tmp_path: Path) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    result = chat(tmp_path, "hi\n", REDIS_URL=nowhere)
    assert result.returncode == 0, result.stderr
    [notice] = [line for line in result.stdout.splitlines() if "throw-away" in line]
    assert notice.startswith("No Redis answers at REDIS_URL: using a throw-away redis-server at ")
    assert "bot> Hello, alice! Are you hungry?" in result.stdout


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
        "No Redis answers at REDIS_URL and there is no redis-server on PATH: install Redis "
        "(apt-get install redis-server, brew install redis) or set REDIS_URL"
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
