"""Run `python -m <bot>` as a subprocess for end-to-end tests, with a clean environment.

The Bot API it talks to is `botnodes.testing.FakeBotAPIServer` on
127.0.0.1 (TELEGRAM_API_URL); real processes get real signals.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from botnodes.telegram.settings import env_names

from {{ cookiecutter.project_slug }}.settings import Settings

#: Every environment variable the bot reads, from its settings model: a setting of your own
#: is in here (and must be in .env.example) the moment it is a field.
SETTING_NAMES = tuple(env_names(Settings))

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def bot_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """The test's environment without any bot setting of the developer's, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


class BotProcess:
    """`python -m <package> [args]` as a subprocess, its stdout and stderr in `log_path`.

    It runs in `workdir` (not the project root) so a developer's `.env` never leaks in.
    """

    def __init__(
        self, package: str, settings: Mapping[str, str], workdir: Path, *args: str
    ) -> None:
        self.package = package
        self.env = bot_environment(settings)
        self.workdir = workdir
        self.args = args
        self.log_path = workdir / f"{package}-{id(self)}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.package,
                *self.args,
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"bot did not exit within {timeout}s; log:\n{self.log()}"
            ) from None

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` and return the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        return await self.wait(timeout)

    async def kill(self) -> None:
        """Hard stop for cleanup after a failed test."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
