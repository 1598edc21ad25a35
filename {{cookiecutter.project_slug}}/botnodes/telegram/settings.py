"""The runtime's settings from the environment and `.env`, one class per concern.

Every value is checked at start-up so a typo stops the deploy with one clear line instead of
failing on the first user. Secrets are `SecretStr`: they never show up in reprs, logs or errors.
A bot adds its own concerns by subclassing `BotSettings` (see the owner's `settings.py`):
`load_settings` reads every field of the subclass the same way, so a new setting needs no
loading code of its own.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from botnodes import MAX_TTL_SECONDS

DEFAULT_ENV_FILE = Path(".env")

S = TypeVar("S", bound=BaseSettings)
T = TypeVar("T", bound="BotSettings")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_WITH_UNIT = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def _seconds_or_unit(value: Any) -> Any:
    """`1800` and `30m` (s, m, h, d) as a duration; anything else goes to pydantic as it is.

    pydantic itself takes a number of seconds (not as text, which is all an environment
    has), ISO 8601 (`PT30M`, `P1D`) and `[D day[s], ]HH:MM:SS`.
    """
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    with_unit = _WITH_UNIT.fullmatch(text)
    if with_unit:
        return timedelta(seconds=float(with_unit[1]) * _UNIT_SECONDS[with_unit[2]])
    try:
        return timedelta(seconds=float(text))
    except (ValueError, OverflowError):
        return value


#: A length of time: seconds, `30m`, `24h`, `PT30M`, `01:00:00`...; 0 is allowed (off).
Duration = Annotated[
    timedelta,
    BeforeValidator(_seconds_or_unit),
    Field(ge=timedelta(0), le=timedelta(days=3650)),
]


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line safe to print."""


def settings_config(prefix: str = "") -> SettingsConfigDict:
    """How every settings class reads the environment: use it in a bot's own classes too."""
    return SettingsConfigDict(
        env_prefix=prefix,
        env_file=DEFAULT_ENV_FILE,
        env_file_encoding="utf-8",
        # `.env` holds every concern's settings; each class reads only its own.
        extra="ignore",
        # `STATE_TTL=` in `.env` means "not set", not "an invalid empty number".
        env_ignore_empty=True,
        frozen=True,
        # `inf` and `nan` are floats to Python, but no timeout or TTL.
        allow_inf_nan=False,
    )


class TelegramSettings(BaseSettings):
    """How the bot reaches Telegram."""

    model_config = settings_config()

    bot_token: SecretStr
    telegram_api_url: HttpUrl | None = None
    telegram_max_retries: int = Field(default=5, ge=0, le=100)
    telegram_max_retry_wait: float = Field(default=30.0, ge=0, le=3600)
    # Every Bot API call ends within this, retries and waits included: a Bot API that never
    # answers costs a reply this long, not a request timeout per retry.
    telegram_call_timeout: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("bot_token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        # Same rule as aiogram's own check, done here so the error names the setting.
        bot_id, colon, secret = value.get_secret_value().partition(":")
        if not colon or not bot_id.isdigit() or not secret or any(c.isspace() for c in secret):
            raise ValueError("must look like <digits>:<secret> as given by @BotFather")
        return value


class RedisSettings(BaseSettings):
    """Where the users' state lives and how hard to try reaching it."""

    model_config = settings_config("REDIS_")

    # A SecretStr because the URL may carry a password.
    url: SecretStr = SecretStr("redis://localhost:6379/0")
    cluster: bool = False
    # As many as MAX_CONCURRENT_UPDATES: each update holds at most one connection at a time.
    max_connections: int = Field(default=100, ge=1)
    pool_timeout: float = Field(default=5.0, gt=0)
    socket_timeout: float = Field(default=5.0, gt=0)
    retries: int = Field(default=3, ge=0)
    health_check_interval: float = Field(default=30.0, ge=0)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: SecretStr) -> SecretStr:
        # Check the shape without ever echoing the value: it may contain a password.
        try:
            parts = urlsplit(value.get_secret_value())
        except ValueError:
            raise ValueError("must be a URL like redis://[:password@]host:6379/0") from None
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must start with redis://, rediss:// or unix://")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("must name a host, like redis://host:6379/0")
        return value


class StateSettings(BaseSettings):
    """How botnodes keeps and locks each user's node."""

    model_config = settings_config()

    state_key: str = Field(default="nodes_state", min_length=1)
    # The limits are botnodes' and Redis's own: refused here in one line, not at the first user.
    state_ttl: float | None = Field(default=None, gt=0, le=MAX_TTL_SECONDS)
    # A live holder renews its lock every LOCK_TTL / 3, so this is only how long a holder
    # that died (or a lock an append-only file brought back) can keep its user waiting.
    lock_ttl: float = Field(default=5.0, gt=0, le=MAX_TTL_SECONDS)
    lock_wait_timeout: float = Field(default=10.0, gt=0, le=MAX_TTL_SECONDS)
    # No node may store more than this for one user: a step over it is refused, state kept.
    state_max_bytes: int = Field(default=65_536, ge=256, le=512 * 1024 * 1024)
    # How long a handled update is remembered, so a re-delivery of it runs once (Telegram
    # keeps an update for 24 hours).
    dedupe_window: float = Field(default=86_400.0, gt=0, le=MAX_TTL_SECONDS)

    @field_validator("state_key")
    @classmethod
    def _no_braces(cls, value: str) -> str:
        if "{" in value or "}" in value:
            raise ValueError("must not contain { or }: botnodes adds the Redis Cluster hash tag")
        return value


class LanguageSettings(BaseSettings):
    """Which language a user gets when neither they nor Telegram name one the bot has."""

    model_config = settings_config()

    #: Checked against the bot's locales by `check_language` (the settings don't know them).
    default_language: str = "en"


class RuntimeSettings(BaseSettings):
    """How the process runs and stops."""

    model_config = settings_config()

    log_level: LogLevel = "INFO"
    shutdown_timeout: float = Field(default=8.0, gt=0)
    max_concurrent_updates: int = Field(default=100, ge=1)
    max_pending_updates: int = Field(default=1000, ge=1)
    max_queued_per_user: int = Field(default=50, ge=1)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class WebhookSettings(BaseSettings):
    """Webhook mode: set WEBHOOK_URL and Telegram POSTs updates to this process."""

    model_config = settings_config("WEBHOOK_")

    #: The public HTTPS URL Telegram posts to; its path is where the server listens.
    url: HttpUrl | None = None
    secret: SecretStr | None = None
    host: str = "0.0.0.0"  # noqa: S104 - a container's server listens on every interface
    port: int = Field(default=8080, ge=1, le=65535)
    # A client gets this long for a request's headers, then as long again for its body; a
    # stalled connection is closed after it so it can't hold a file descriptor for ever.
    read_timeout: float = Field(default=10.0, gt=0, le=300)
    # A delivery whose step is not stored after this long while Redis does not answer a PING
    # (within READY_TIMEOUT) is cut and answered 503 with Retry-After: Telegram sends it again.
    redis_deadline: float = Field(default=5.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _https(cls, value: HttpUrl | None) -> HttpUrl | None:
        if value is not None and value.scheme != "https":
            raise ValueError("must be an https:// URL: Telegram only posts to HTTPS")
        return value

    @field_validator("secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram's rule for secret_token: 1-256 characters A-Z, a-z, 0-9, _ and -.
        if value is not None and not _SECRET_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("must be 1 to 256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @model_validator(mode="after")
    def _secret_with_url(self) -> WebhookSettings:
        if self.url is not None and self.secret is None:
            raise ValueError(
                "WEBHOOK_SECRET: is required when WEBHOOK_URL is set (Telegram sends it back "
                "with every update, so others can't post updates)"
            )
        return self


class SendLimitSettings(BaseSettings):
    """Telegram's send limits, kept by all processes together (see send_limits.py)."""

    model_config = settings_config()

    # Off: no Redis call per reply; Telegram's 429s are still waited out.
    send_limits: bool = True
    # Messages per second to one private chat, sustained; Telegram asks for about 1.
    chat_rate: float = Field(default=1.0, gt=0, le=30)
    # Messages per minute to one group (negative chat id); Telegram asks for at most 20.
    group_rate: float = Field(default=20.0, gt=0, le=600)
    # Messages a chat may get at once (a step's 2-3 replies) before the rate applies.
    chat_burst: int = Field(default=3, ge=1, le=20)
    # Broadcast messages per second, all processes together; Telegram's bulk limit is ~30.
    broadcast_rate: float = Field(default=25.0, gt=0, le=1000)
    # Most broadcast messages in any second as Telegram counts them (when they arrive),
    # all processes together: Telegram's bulk limit (bulk_window.py).
    broadcast_limit: int = Field(default=30, ge=1, le=1000)
    # Seconds a broadcast waits for a Redis that does not answer (each call cut after a few
    # seconds and tried again) before it stops with one line; a rerun resumes it.
    broadcast_redis_patience: float = Field(default=60.0, gt=0, le=3600)


class MetricsSettings(BaseSettings):
    """Prometheus metrics: on the webhook server, or on their own port when polling."""

    model_config = settings_config("METRICS_")

    port: int | None = Field(default=None, ge=1, le=65535)


@dataclass(frozen=True, slots=True, kw_only=True)
class BotSettings:
    """The runtime's settings, grouped by concern; a bot subclasses it to add its own.

    Each field is one `BaseSettings` class read from the environment and `.env`; a subclass's
    extra fields (`food_api: FoodApiSettings`, say) are read the same way by `load_settings`.
    """

    telegram: TelegramSettings
    redis: RedisSettings
    state: StateSettings
    runtime: RuntimeSettings
    webhook: WebhookSettings = field(default_factory=lambda: WebhookSettings(_env_file=None))
    metrics: MetricsSettings = field(default_factory=lambda: MetricsSettings(_env_file=None))
    language: LanguageSettings = field(default_factory=lambda: LanguageSettings(_env_file=None))
    send_limits: SendLimitSettings = field(
        default_factory=lambda: SendLimitSettings(_env_file=None)
    )


def sections(settings_class: type[BotSettings]) -> dict[str, type[BaseSettings]]:
    """Each field of `settings_class` and the `BaseSettings` class it is read with."""
    hints = typing.get_type_hints(settings_class)
    found: dict[str, type[BaseSettings]] = {}
    for section in dataclasses.fields(settings_class):
        kind = hints[section.name]
        if not (isinstance(kind, type) and issubclass(kind, BaseSettings)):
            raise TypeError(f"{settings_class.__name__}.{section.name} is not a BaseSettings class")
        found[section.name] = kind
    return found


def env_names(settings_class: type[BotSettings]) -> list[str]:
    """Every environment variable `settings_class` reads, e.g. for checking `.env.example`."""
    names: list[str] = []
    for section in sections(settings_class).values():
        prefix = str(section.model_config.get("env_prefix", ""))
        names += [f"{prefix}{name}".upper() for name in section.model_fields]
    return names


def _env_name(settings_class: type[BaseSettings], error: Any) -> str:
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    name = str(error["loc"][0]) if error["loc"] else ""
    return f"{prefix}{name}".upper()


def _rule(error: Any) -> str:
    if error["type"] == "missing":
        return "is required (set it in the environment or in .env)"
    return str(error["msg"]).removeprefix("Value error, ")


#: How much of a refused value the error line shows.
SHOWN_VALUE_CHARS = 60


def _shown_value(settings_class: type[BaseSettings], error: Any) -> str:
    """` (got 'value')` for a refused value that is not a secret, else nothing.

    Seeing what was typed finds a typo at once; a `SecretStr` (the token, Redis's URL, the
    webhook secret, a payment token) is never shown. `repr` escapes line breaks and control
    characters, so the line stays one line and cannot forge a log line.
    """
    field_info = settings_class.model_fields.get(str(error["loc"][0]))
    if field_info is None or error["type"] == "missing" or "input" not in error:
        return ""
    if SecretStr in (field_info.annotation, *typing.get_args(field_info.annotation)):
        return ""
    value = error["input"]
    if not isinstance(value, str):
        return ""
    shown = value if len(value) <= SHOWN_VALUE_CHARS else value[:SHOWN_VALUE_CHARS] + "..."
    return f" (got {shown!r})"


def _load_without_token(env_file: Path | None) -> TelegramSettings:
    try:
        return _load(TelegramSettings, env_file)
    except ConfigError as exc:
        if not str(exc).startswith("BOT_TOKEN: is required"):
            raise
    return TelegramSettings(_env_file=env_file, bot_token=SecretStr(LOCAL_TOKEN))


def _load(settings_class: type[S], env_file: Path | None) -> S:
    try:
        return settings_class(_env_file=env_file)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if not first["loc"]:  # a rule across settings names them itself
            raise ConfigError(_rule(first)) from None
        name, rule = _env_name(settings_class, first), _rule(first)
        raise ConfigError(f"{name}: {rule}{_shown_value(settings_class, first)}") from None


#: The token of `chat`, which never talks to Telegram: it only has to look like one.
LOCAL_TOKEN = "1:local-chat-without-telegram"  # noqa: S105 - a placeholder, never a secret


def load_settings(
    settings_class: type[T],
    env_file: Path | None = DEFAULT_ENV_FILE,
    *,
    need_token: bool = True,
    languages: tuple[str, ...] | None = None,
) -> T:
    """Read every setting of `settings_class`; raise `ConfigError` naming the first bad one.

    Without `need_token` (the local chat) a missing BOT_TOKEN is not an error. `languages`
    (the bot's locales) refuses a DEFAULT_LANGUAGE the bot can't speak.
    """
    values: dict[str, Any] = {}
    for name, section in sections(settings_class).items():
        if section is TelegramSettings and not need_token:
            values[name] = _load_without_token(env_file)
        else:
            values[name] = _load(section, env_file)
    settings = settings_class(**values)
    if languages is not None:
        check_language(settings, languages)
    return settings


def check_language(settings: BotSettings, languages: tuple[str, ...]) -> None:
    """DEFAULT_LANGUAGE must be one the bot has: refused in one line at start-up."""
    chosen = settings.language.default_language
    if chosen not in languages:
        shipped = ", ".join(languages)
        raise ConfigError(
            f"DEFAULT_LANGUAGE: {chosen!r} is not one of the bot's languages ({shipped})"
        )
