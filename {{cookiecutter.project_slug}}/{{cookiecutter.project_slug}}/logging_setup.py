"""Logging for the bot process: one line per record, with secrets masked."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

MASK = "***"


class RedactingFormatter(logging.Formatter):
    """Replaces every known secret in the formatted line, tracebacks included.

    Settings keep secrets in `SecretStr`, but libraries may still put a URL (with the bot
    token in its path, or a Redis password) into an exception message; this is the last net.
    """

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self._secrets:
            line = line.replace(secret, MASK)
        return line


def setup_logging(level: str, secrets: Iterable[str]) -> None:
    """Send every logger's records to stderr through the redacting formatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
