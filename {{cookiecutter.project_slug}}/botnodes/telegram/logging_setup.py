"""Logging for the bot process: one line per record, with secrets masked.

Every line the process writes goes through here: log records, the one-line start-up errors of
`__main__` (`mask`), and uncaught exceptions (`sys.excepthook`).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from types import TracebackType

MASK = "***"

# C0 and C1 control characters except tab: a newline in a user's text must not start what
# looks like a log record of its own.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """`text` on one line: control characters become visible escapes (`\\n`, `\\x1b`, ...)."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `***` (longest first, so no part of one survives)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """One record per line: secrets masked everywhere, control characters escaped.

    Settings keep secrets in `SecretStr`, but libraries may still put a URL (with the bot
    token in its path, or a Redis password) into an exception message; this is the last net.
    The message (with its arguments, which may be user text) is escaped onto one line; a
    traceback follows on indented lines, so nothing a user typed can pass for a record.
    """

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._secrets = list(secrets)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record), self._secrets)


def _indent(text: str) -> str:
    return "\n".join(f"    {escape_controls(line)}" for line in text.splitlines())


def setup_logging(level: str, secrets: Iterable[str]) -> None:
    """Send every logger's records, and uncaught exceptions, to stderr through the formatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)

    def log_uncaught(
        kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        logging.getLogger("uncaught").critical("uncaught exception", exc_info=(kind, error, trace))

    sys.excepthook = log_uncaught
