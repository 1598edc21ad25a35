"""Command line: `python -m <package>` runs the bot; subcommands slot into `build_parser`.

The bot's `__main__.py` calls `main(BOT)` with its `BotDefinition`; everything else is here.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from botnodes import ConfigurationError

from ..devtools import diagram
from ..devtools.chat import default_log_path, run_chat
from ..devtools.scaffold import run_new_node
from .app import App, StartupError, secrets_of
from .broadcast_command import broadcast
from .broadcast_job import BroadcastError, check_job
from .definition import BotDefinition
from .healthcheck import EXIT_UNHEALTHY, run_healthcheck
from .logging_setup import escape_controls, mask, setup_logging
from .polling import run_polling
from .settings import BotSettings, ConfigError, load_settings
from .webhook import run_webhook

#: Exit status for a missing or malformed setting (like a usage error: fix it and retry).
EXIT_CONFIG_ERROR = 2

Command = Callable[[BotSettings], int]
AnyBot = BotDefinition[Any, Any]


#: Exit status when the Bot API, Redis or the webhook port can't be used at start-up.
EXIT_STARTUP_ERROR = 1


async def serve(definition: AnyBot, settings: BotSettings) -> None:
    """Run the bot until it is asked to stop: webhooks if WEBHOOK_URL is set, else polling."""
    app = App(definition, settings)
    try:
        await app.check_dependencies()
    except StartupError:
        await app.close()
        raise
    # Start-up leaves ~200,000 long-lived objects (aiogram's and pydantic's models); freezing
    # them spares every later full garbage collection from walking them again (the
    # template's benchmark measured about 30% more updates/s with it).
    gc.freeze()
    if settings.webhook.url is not None:
        await run_webhook(app)
    else:
        await run_polling(app)


def run_bot(definition: AnyBot, settings: BotSettings) -> int:
    """Long-poll Telegram until SIGTERM/SIGINT.

    Start-up checks getMe and Redis first; a wrong token, an unreachable Bot API or Redis,
    a refused setWebhook or a busy port deserves one line rather than a traceback, and a
    non-zero exit so the orchestrator (compose's `restart: unless-stopped`) tries again
    later. Errors after start-up are retried instead.
    """
    try:
        asyncio.run(serve(definition, settings))
    except StartupError as exc:
        # aiohttp's errors may carry the request URL, and with it the token: mask the line.
        say(settings, f"Cannot start: {exc}")
        return EXIT_STARTUP_ERROR
    except ConfigurationError as exc:  # botnodes refused a value the settings let through
        say(settings, f"Configuration error: {exc}")
        return EXIT_CONFIG_ERROR
    return 0


def say(settings: BotSettings, line: str) -> None:
    """Print one line to stderr, masked and on one line like every log record."""
    print(mask(escape_controls(line), secrets_of(settings)), file=sys.stderr)


def build_parser(definition: AnyBot) -> argparse.ArgumentParser:
    package = definition.package
    parser = argparse.ArgumentParser(
        prog=f"python -m {package}",
        description="Run the bot. Settings come from the environment and .env.",
    )
    run = functools.partial(run_bot, definition)
    parser.set_defaults(
        command=run, config_error_exit=EXIT_CONFIG_ERROR, without_settings=None, need_token=True
    )
    commands = parser.add_subparsers(title="commands")
    commands.add_parser("run", help="run the bot (the default)").set_defaults(command=run)
    commands.add_parser(
        "healthcheck", help="exit 0 if Redis and the Bot API answer, else 1 (Docker HEALTHCHECK)"
    ).set_defaults(
        command=run_healthcheck,
        # Docker reserves exit status 2 of a health check: a bad setting is simply unhealthy.
        config_error_exit=EXIT_UNHEALTHY,
    )
    flow = commands.add_parser(
        "diagram", help="print the flow of nodes as a Mermaid diagram (no settings needed)"
    )
    flow.add_argument("--readme", help="update the diagram between the markers in this file")
    flow.set_defaults(without_settings=functools.partial(print_diagram, definition))
    talk = commands.add_parser(
        "chat",
        help="talk to the bot in this terminal: no Telegram, no token; it starts a throw-away "
        "redis-server of its own",
    )
    talk.add_argument(
        "--redis-from-env",
        action="store_true",
        help="chat on the Redis of REDIS_URL instead: the chat's users are stored with the "
        "bot's real ones (and would get its broadcasts)",
    )
    talk.add_argument("--name", default="alice", help="your username in the chat (alice)")
    talk.add_argument(
        "--log",
        type=Path,
        default=default_log_path(package),
        help="where the bot's log lines go, out of the conversation (%(default)s)",
    )
    talk.set_defaults(command=lambda settings: 0, chat=True, need_token=False)
    mailing = commands.add_parser(
        "broadcast",
        help="send a message to every user except those who blocked the bot; the same --id "
        "resumes the job, and no user gets it twice",
    )
    mailing.add_argument("--id", dest="job_id", required=True, help="the job's name")
    mailing.add_argument(
        "--text", required=True, help="the message (at most 4096 characters), in any language"
    )
    mailing.add_argument(
        "--text-in",
        nargs=2,
        action="append",
        default=[],
        metavar=("LANGUAGE", "TEXT"),
        help="the message in one of the bot's languages, for the users who speak it (repeatable)",
    )
    mailing.add_argument("--dry-run", action="store_true", help="only count the recipients")
    mailing.set_defaults(broadcast=True)
    scaffold = commands.add_parser(
        "new-node", help="write a new node, its registration and its test (no settings needed)"
    )
    scaffold.add_argument("name", help="the node's module and key: a lower-case identifier")
    scaffold.add_argument(
        "--from",
        dest="from_key",
        default="start",
        help="the key of the node whose on_event will lead to it (start)",
    )
    scaffold.set_defaults(
        without_settings=lambda args: run_new_node(definition, args.name, args.from_key)
    )
    return parser


def print_diagram(definition: AnyBot, args: argparse.Namespace) -> int:
    """Print the flow as Mermaid, or update it in a README (needs no settings)."""
    package = definition.package
    graph = diagram.flow_graph(definition)
    try:
        graph.check()  # a flow the bot would refuse to start with isn't drawn
    except ConfigurationError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.readme is None:
        print(graph.mermaid(), end="")
        return 0
    readme = Path(args.readme)
    try:
        text = readme.read_text(encoding="utf-8")
        readme.write_text(diagram.replace_in_readme(text, package, graph), encoding="utf-8")
    except (OSError, ValueError) as exc:
        print(f"Cannot update {readme}: {exc}", file=sys.stderr)
        return 1
    print(f"Updated the flow diagram in {readme}")
    return 0


def run_broadcast_command(
    definition: AnyBot, settings: BotSettings, args: argparse.Namespace
) -> int:
    """The `broadcast` command: one summary line, or one line saying why it can't run."""
    try:
        translations = dict(args.text_in)
        check_job(args.job_id, args.text, translations, definition.catalog.languages)
    except BroadcastError as exc:
        print(f"Broadcast error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    job = broadcast(
        definition,
        settings,
        args.job_id,
        args.text,
        dry_run=args.dry_run,
        translations=translations,
    )
    try:
        return asyncio.run(job)
    except StartupError as exc:
        say(settings, f"Cannot start: {exc}")
        return EXIT_STARTUP_ERROR


def main(definition: AnyBot, argv: Sequence[str] | None = None) -> int:
    """Run the command `argv` names for the bot `definition`; the exit status."""
    args = build_parser(definition).parse_args(argv)
    if args.without_settings is not None:
        return int(args.without_settings(args))
    command: Command = args.command
    try:
        settings = load_settings(
            definition.settings_class,
            need_token=args.need_token,
            languages=definition.catalog.languages,
        )
        check_texts(definition)
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return int(args.config_error_exit)
    setup_logging(settings.runtime.log_level, secrets_of(settings))
    try:
        if getattr(args, "chat", False):
            return run_chat(
                definition, settings, args.name, args.log, redis_from_env=args.redis_from_env
            )
        if getattr(args, "broadcast", False):
            return run_broadcast_command(definition, settings, args)
        return command(settings)
    except KeyboardInterrupt:
        return 130


def check_texts(definition: AnyBot) -> None:
    """A language missing a text the code uses stops start-up, not a user's reply."""
    missing = definition.missing_texts()
    if missing:
        language, text_id = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(f"locales/{language}/bot.ftl has no text {text_id!r}{more}")
