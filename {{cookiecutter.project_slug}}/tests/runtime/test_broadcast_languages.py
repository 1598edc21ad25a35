"""A broadcast in each user's language: `--text-in ru TEXT` next to `--text`.

Real Redis and the Bot API stand-in; the languages are the ones the bot keeps per user
(tests/test_bot_languages.py tests how they are chosen).
"""

from __future__ import annotations

import io

import pytest
from aiogram import Bot
from redis.asyncio import Redis

from botnodes.telegram.broadcast import Broadcast
from botnodes.telegram.broadcast_command import run_job
from botnodes.telegram.broadcast_job import BroadcastError, check_job
from botnodes.telegram.cli import build_parser, run_broadcast_command
from botnodes.telegram.language import Languages
from botnodes.telegram.recipients import Recipients
from botnodes.telegram.send_limits import SendLimiter
from botnodes.telegram.settings import SendLimitSettings
from botnodes.testing import BotTestClient, FakeSession, FakeTelegram

from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.settings import Settings
from {{ cookiecutter.project_slug }}.texts import CATALOG

HELLO, PRIVET = "Soup of the day!", "Суп дня!"


async def test_each_user_gets_the_message_in_their_language(
    client: BotTestClient, settings: Settings, redis_client: Redis
) -> None:
    prefix = settings.state.state_key
    languages = Languages(CATALOG, "en", redis=redis_client, key_prefix=prefix)
    # 5001 chose Russian; 5002's Telegram reports Russian (remembered from their message);
    # 5003 chose English although Telegram reports Russian; 5004 reports nothing we know.
    await client.user(5001).send("hi")
    await languages.choose(5001, "ru")
    await client.user(5002, language_code="ru-RU").send("hi")
    await client.user(5003, language_code="ru").send("hi")
    await languages.choose(5003, "en")
    await client.user(5004, language_code="de").send("hi")
    telegram = FakeTelegram()
    bot = Bot(settings.telegram.bot_token.get_secret_value(), session=FakeSession(telegram))
    limiter = SendLimiter(redis_client, prefix, SendLimitSettings(_env_file=None))
    job = Broadcast(
        bot,
        Recipients(redis_client, prefix),
        limiter,
        job_id="soup",
        text=HELLO,
        translations={"ru": PRIVET},
        languages=languages,
    )
    out = io.StringIO()
    assert await run_job(job, "soup", dry_run=False, out=out) == 0
    assert out.getvalue() == "Broadcast soup: sent 4, skipped as blocked 0, failed 0\n"
    got = {call.params["chat_id"]: call.params["text"] for call in telegram.calls if call.ok}
    assert got == {5001: PRIVET, 5002: PRIVET, 5003: HELLO, 5004: HELLO}


@pytest.mark.parametrize(
    ("translations", "error"),
    [
        ({"de": "Suppe!"}, "--text-in 'de': the bot has no such language (en, ru)"),
        ({"ru": " "}, "--text-in ru: must not be empty"),
        ({"ru": "я" * 4097}, "--text-in ru: 4097 characters, Telegram takes at most 4096"),
    ],
)
def test_a_bad_translation_is_refused_in_one_line(translations: dict[str, str], error: str) -> None:
    with pytest.raises(BroadcastError) as refused:
        check_job("soup", HELLO, translations, CATALOG.languages)
    assert str(refused.value) == error


def test_the_command_refuses_a_language_the_bot_lacks_before_it_starts(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["broadcast", "--id", "soup", "--text", HELLO, "--text-in", "de", "Suppe!"]
    # The command as `main` runs it once settings are loaded (main's logging set-up would
    # outlive the test: it is tested with the process in tests/ops/test_broadcast.py).
    assert run_broadcast_command(BOT, settings, build_parser(BOT).parse_args(argv)) == 2
    assert capsys.readouterr().err == (
        "Broadcast error: --text-in 'de': the bot has no such language (en, ru)\n"
    )
