"""The runtime's own texts as an English-speaking user reads them, for assertions."""

from botnodes.telegram.texts import RUNTIME_TEXTS

from {{ cookiecutter.project_slug }}.texts import CATALOG

STALE_PRESS_TEXT = CATALOG.english(RUNTIME_TEXTS.stale_press())
NOT_TEXT_TEXT = CATALOG.english(RUNTIME_TEXTS.not_text())
STATE_UNAVAILABLE_TEXT = CATALOG.english(RUNTIME_TEXTS.state_unavailable())
USER_BUSY_TEXT = CATALOG.english(RUNTIME_TEXTS.user_busy())
TRANSITION_LOST_TEXT = CATALOG.english(RUNTIME_TEXTS.transition_lost())
STATE_TOO_LARGE_TEXT = CATALOG.english(RUNTIME_TEXTS.state_too_large())
