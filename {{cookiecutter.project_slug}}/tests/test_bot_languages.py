"""The bot in its users' languages: Telegram's language_code, /language, typed words, fallback."""
# ruff: noqa: RUF001  - the Russian texts are meant to be Cyrillic

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline

from botnodes.telegram.settings import ConfigError, LanguageSettings, load_settings
from botnodes.testing import BotTestClient, TestUser

from {{ cookiecutter.project_slug }}.main import BOT
from {{ cookiecutter.project_slug }}.nodes import Hold, Hungry, Start
from {{ cookiecutter.project_slug }}.settings import Settings
from {{ cookiecutter.project_slug }}.texts import CATALOG

from .conftest import RecordingFoodAPI, free_port, make_settings

ALICE = 2001

RU_GREETING = "Привет, alice! Проголодались?"
RU_MAIN_MENU = "Снова главное меню! Проголодались?"
RU_EMPTY_CART = "Что будете заказывать? Корзина: пусто"


async def say(user: TestUser, text: str | None) -> list[str]:
    return [reply.text for reply in await user.send(text)]


async def click(user: TestUser, button: str) -> list[str]:
    return [reply.text for reply in await user.click(button)]


def with_default(settings: Settings, language: str) -> Settings:
    return Settings(
        telegram=settings.telegram,
        redis=settings.redis,
        state=settings.state,
        food_api=settings.food_api,
        runtime=settings.runtime,
        language=LanguageSettings(default_language=language, _env_file=None),
    )


async def test_russian_through_the_whole_food_flow(
    client: BotTestClient, food_api: RecordingFoodAPI
) -> None:
    alice = client.user(ALICE, language_code="ru-RU")  # ru-RU is ru
    greeting = await alice.send("hi")
    assert [(r.text, r.buttons) for r in greeting] == [(RU_GREETING, [["Да", "Нет"]])]
    hungry = await alice.click("Да")
    assert [(r.text, r.buttons) for r in hungry] == [
        ("Не волнуйтесь, я о вас позабочусь!", []),
        (RU_EMPTY_CART, [["Заказать", "Отмена"]]),
    ]
    assert await say(alice, "Заказать") == [
        "Корзина пуста! Напишите «Отмена», чтобы отменить заказ",
        RU_EMPTY_CART,
    ]
    assert await say(alice, "Пицца") == [
        "Добавлено: Пицца",
        "Что будете заказывать? Корзина: Пицца",
    ]
    assert (await say(alice, "Да"))[0] == "Добавлено: Да"  # on this node "Да" is a dish
    assert await say(alice, "Заказать") == [  # typed, like the button
        "Заказываю: Пицца, Да",
        "Заказано!",
        RU_MAIN_MENU,
    ]
    assert food_api.orders == [(ALICE, ["Пицца", "Да"])]
    assert await say(alice, "Нет") == ["Тогда напишите мне, когда будете готовы!"]
    assert isinstance(await alice.node(), Hold)
    assert await say(alice, "снова я") == [RU_MAIN_MENU]
    assert await say(alice, "Что?") == ["Что-что?", RU_MAIN_MENU]


async def test_russian_buttons_and_typed_words_are_equivalent_english_words_too(
    client: BotTestClient,
) -> None:
    alice = client.user(ALICE, language_code="ru")
    await alice.send("hi")
    await say(alice, "Да")  # typed: what the button Да does
    assert isinstance(await alice.node(), Hungry)
    await say(alice, "Борщ")
    assert await click(alice, "Отмена") == ["Заказ отменён!", RU_MAIN_MENU]
    assert await say(alice, "Yes") == ["Не волнуйтесь, я о вас позабочусь!", RU_EMPTY_CART]
    assert await say(alice, "Cancel") == ["Заказ отменён!", RU_MAIN_MENU]
    bob = client.user(ALICE + 1, username="bob")  # English: Russian words work for him too
    await bob.send("hi")
    assert await say(bob, "Да") == [
        "No worries, I've got you back!",
        "What are you gonna order? Cart: Empty",
    ]


async def test_russian_limits_timers_and_stale_presses(client: BotTestClient) -> None:
    alice = client.user(ALICE, language_code="ru")
    await alice.send("hi")
    greeting = alice.replies()[-1]
    await alice.click("Да")
    await alice.click("Да", on=greeting)
    assert alice.last_answer == "Это меню устарело."
    assert await say(alice, "x" * 101) == [
        "Слишком длинное название! В названии блюда не больше 100 символов: "
        "напишите короче, пожалуйста."
    ]
    await say(alice, "Пицца")
    await client.advance(minutes=30)
    assert alice.replies()[-1].text == "Всё ещё голодны? Ваша корзина: Пицца"
    assert alice.replies()[-1].buttons == [["Заказать", "Отмена"]]
    await client.advance(hours=24)
    assert [r.text for r in alice.replies()[-2:]] == [
        "Ваша корзина устарела и очищена.",
        RU_MAIN_MENU,
    ]
    assert await say(alice, None) == ["Я понимаю только текстовые сообщения."]


async def test_a_full_russian_cart_counts_its_dishes_in_russian(
    redis_client: Redis, state_key: str, redis_url: str
) -> None:
    settings = make_settings(state_key, url=SecretStr(redis_url))
    async with BotTestClient.start(BOT, settings, redis=redis_client) as client:
        alice = client.user(ALICE, language_code="ru")
        await client.nodes.user(ALICE).to(Hungry([f"блюдо {i}" for i in range(50)]))
        assert await say(alice, "ещё") == [
            "Корзина полна (50 блюд). Напишите «Заказать», чтобы заказать, "
            "или «Отмена», чтобы начать заново."
        ]
        long_cart = [f"очень длинное блюдо номер {i:03}" for i in range(45)]
        await client.nodes.user(ALICE).to(Hungry(long_cart))
        ask = alice.replies()[-1].text
        assert ask.startswith("Что будете заказывать? Корзина: 45 блюд, последние ")


async def test_a_user_put_on_a_node_by_the_test_client_hears_their_language(
    client: BotTestClient,
) -> None:
    """`alice.to(node)` knows what Telegram reports for her before any update said so."""
    olga = client.user(7101, language_code="ru")
    await olga.to(Hungry())
    assert [reply.text for reply in olga.replies()] == ["Что будете заказывать? Корзина: пусто"]


async def test_an_unknown_language_code_falls_back_to_the_default(
    client: BotTestClient, settings: Settings, redis_client: Redis
) -> None:
    german = client.user(ALICE, language_code="de")
    assert await say(german, "hi") == ["Hello, alice! Are you hungry?"]
    silent = client.user(ALICE + 1, username="bob")  # Telegram reports no language
    assert await say(silent, "hi") == ["Hello, bob! Are you hungry?"]
    russian_default = with_default(settings, "ru")
    async with BotTestClient.start(BOT, russian_default, redis=redis_client) as russian_bot:
        assert await say(russian_bot.user(ALICE + 2, language_code="de"), "hi") == [RU_GREETING]
        english = russian_bot.user(ALICE + 3, language_code="en-GB")
        assert await say(english, "hi") == ["Hello, alice! Are you hungry?"]


async def test_language_command_switches_and_the_choice_survives_moves_and_resets(
    client: BotTestClient, redis_client: Redis, settings: Settings
) -> None:
    alice = client.user(ALICE, language_code="en")
    await alice.send("hi")
    menu = await alice.send("/language")
    assert [(r.text, r.buttons) for r in menu] == [
        ("Choose your language:", [["English", "Русский"]])
    ]
    assert isinstance(await alice.node(), Start)  # not a step of the flow
    assert await click(alice, "Русский") == ["Теперь я говорю с вами по-русски."]
    assert await say(alice, "Да") == ["Не волнуйтесь, я о вас позабочусь!", RU_EMPTY_CART]
    # The choice is a key of its own, in the user's hash slot; node data knows nothing of it.
    key = settings.state.state_key + ":{2001}:language"
    assert await redis_client.get(key) == b"ru"
    node = await alice.node()
    assert isinstance(node, Hungry)
    assert "ru" not in node._data.model_dump_json()
    await client.nodes.user(ALICE).forget()  # a reset (or STATE_TTL running out)
    assert await say(alice, "hi") == [RU_GREETING]
    assert (await alice.send("/language"))[0].text == "Выберите язык:"
    assert await click(alice, "English") == ["I'll speak English with you from now on."]
    assert await say(alice, "No") == ["Write me when you are ready then!"]


async def test_a_choice_wins_over_telegram_and_timers_know_the_reported_language(
    client: BotTestClient,
) -> None:
    alice = client.user(ALICE, language_code="ru")
    await alice.send("hi")
    await alice.send("/language")
    await alice.click("English")
    assert await say(alice, "Yes") == [
        "No worries, I've got you back!",
        "What are you gonna order? Cart: Empty",
    ]
    bob = client.user(ALICE + 1, username="bob", language_code="ru")  # never chose
    await bob.send("hi")
    await bob.click("Да")
    await bob.send("Суп")
    await alice.send("Soup")
    await client.advance(minutes=30)  # a timer has no update: the stored language speaks
    assert bob.replies()[-1].text == "Всё ещё голодны? Ваша корзина: Суп"
    assert alice.replies()[-1].text == "Still hungry? Your cart: Soup"


class BatchRecordingRedis(Redis):
    """The suite's Redis, noting the keys of each script call of every pipeline sent."""

    batches: list[list[list[str]]]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        pipe = super().pipeline(transaction, shard_hint)
        send = pipe.execute

        async def execute(raise_on_error: bool = True) -> list[Any]:
            # EVALSHA <sha> <numkeys> <key> ... <arg> ...
            calls = [args[3 : 3 + int(args[2])] for args, _ in pipe.command_stack]
            self.batches.append(
                [[k.decode() if isinstance(k, bytes) else str(k) for k in keys] for keys in calls]
            )
            return await send(raise_on_error)

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe


async def test_the_language_is_read_by_the_script_that_takes_the_lock(
    settings: Settings, redis_url: str
) -> None:
    redis = BatchRecordingRedis(connection_pool=BlockingConnectionPool.from_url(redis_url))
    redis.batches = []
    try:
        async with BotTestClient.start(BOT, settings, redis=redis) as client:
            alice = client.user(ALICE, language_code="ru")
            for text in ("hi", "Да", "Борщ"):  # one user alone: nobody else's calls to join
                redis.batches.clear()
                assert await alice.send(text)
                language = f"{settings.state.state_key}:" + "{2001}:language"
                state = f"{settings.state.state_key}:" + "{2001}"
                reads = [
                    (batch, keys) for batch in redis.batches for keys in batch if language in keys
                ]
                # One call reads it: the lock-and-read script (the state, the lock, the
                # handled record, the language), no script of its own.
                assert len(reads) == 1, redis.batches
                batch, keys = reads[0]
                assert keys[0] == state, keys
                assert keys[3] == language, keys
                # A user's first update also registers them for broadcasts in the same batch
                # (one shard of the registry, once a process).
                others = [call for call in batch if call is not keys]
                assert all(":users:" in call[0] for call in others), batch
                assert len(others) == (1 if text == "hi" else 0), batch
        assert await redis.get(language) == b"~ru"  # what Telegram reports, kept for timers
    finally:
        await redis.aclose(close_connection_pool=True)


def test_default_language_must_be_one_the_bot_has(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFAULT_LANGUAGE", "de")
    with pytest.raises(ConfigError) as refused:
        load_settings(Settings, None, need_token=False, languages=CATALOG.languages)
    assert str(refused.value) == (
        "DEFAULT_LANGUAGE: 'de' is not one of the bot's languages (en, ru)"
    )
    monkeypatch.setenv("DEFAULT_LANGUAGE", "ru")
    chosen = load_settings(Settings, None, need_token=False, languages=CATALOG.languages)
    assert chosen.language.default_language == "ru"


@pytest.mark.ops
async def test_without_redis_the_apology_is_in_the_language_telegram_reports(
    state_key: str,
) -> None:
    settings = make_settings(state_key, url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"))
    async with BotTestClient.start(BOT, settings) as client:
        assert await say(client.user(ALICE, language_code="ru"), "hi") == [
            "Извините, я сейчас не могу добраться до своей памяти. Попробуйте ещё раз чуть позже."
        ]
