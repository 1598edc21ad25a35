"""The files `python -m <package> new-node NAME` writes, as `string.Template` texts.

`$name` is the node's module and key (`drinks`), `$cls` its class (`Drinks`) and `$package`
the bot's package. The node they make is the smallest complete example of how a node is
written here: stored data in a pydantic model, texts through `ctx.texts` (their words in every
`locales/<language>/bot.ftl`), buttons through `buttons(self.visit, ...)`, `said(event)` and
`means(...)` for typed and pressed words alike in any language, and an `on_event` return
annotation that declares where it can go, so the flow check and `diagram` see it.
"""

from __future__ import annotations

from string import Template

NODE = Template('''\
"""The $name node: say here what the user does on it and where they go next."""

from __future__ import annotations

from pydantic import BaseModel, Field

from botnodes import Node

from ..nodes_types import Ctx, Event, UserId, buttons, means, said, user_display_name
from . import start


class ${cls}Model(BaseModel):
    """Stored in Redis while the user is on this node, so their notes survive a restart."""

    notes: list[str] = Field(default_factory=list)


class $cls(Node[Ctx, Event, UserId, ${cls}Model]):
    """Keeps what the user writes until they press `Done`, then goes back to the main menu."""

    def __init__(self, notes: list[str] | None = None) -> None:
        # Whatever the previous node passes here is what this one starts with.
        self._data = ${cls}Model(notes=notes or [])

    async def on_enter(self, user_id: UserId, ctx: Ctx) -> None:
        texts = ctx.texts  # each text's words, per language, are in locales/*/bot.ftl
        # The buttons carry this visit: pressed once the user has moved on, they are stale.
        done = buttons(self.visit, texts.${name}_done())
        ask = texts.${name}_ask()
        await ctx.send_message(user_id, ask, reply_markup=done)

    async def on_event(self, user_id: UserId, event: Event, ctx: Ctx) -> start.Start | None:
        texts = ctx.texts
        text = said(event)  # the word of a pressed button, or what was typed
        # The button, or its word typed in any language.
        if means(text, texts.${name}_done()):
            notes = ", ".join(self._data.notes) or texts.${name}_nothing()
            await ctx.send_message(user_id, texts.${name}_noted(notes=notes))
            return start.Start(user_display_name(event))
        if text is None:  # a photo, a sticker...: stay, the Done button above still works
            await ctx.send_message(user_id, texts.${name}_hint())
            return None
        self._data.notes.append(text)  # None = stay here; the change is stored with the user
        await ctx.send_message(user_id, texts.${name}_got(note=text))
        return None
''')

TEST = Template('''\
"""The $name node, through the real bot (dispatcher, botnodes, Redis) with the test client."""

from __future__ import annotations

from botnodes.telegram.texts import RUNTIME_TEXTS
from botnodes.testing import BotTestClient

from $package.nodes import Start
from $package.nodes.$name import $cls


async def test_notes_are_kept_until_done(client: BotTestClient) -> None:
    alice = client.user(1001)
    await alice.to($cls())  # as if a node had returned $cls()
    assert [r.text for r in await alice.send("tea")] == ["Got tea"]
    node = await alice.node()
    assert isinstance(node, $cls)
    assert node._data.notes == ["tea"]
    replies = await alice.click("Done")
    assert replies[0].text == "Noted: tea"  # then the main menu greets again
    assert isinstance(await alice.node(), Start)


async def test_done_pressed_again_is_out_of_date(client: BotTestClient) -> None:
    alice = client.user(1002)
    await alice.to($cls(["coffee"]))
    await alice.click("Done")  # back on the main menu: that Done button is now out of date
    assert await alice.click("Done") == []
    assert alice.last_answer == client.english(RUNTIME_TEXTS.stale_press())
    assert isinstance(await alice.node(), Start)
''')

#: The node's methods, added at the end of `class Texts` in texts.py.
TEXT_METHODS = Template("""
    # The $name node (nodes/$name.py)
    def ${name}_ask(self) -> Text:
        return Text("$name-ask")

    def ${name}_done(self) -> Text:
        return Text("$name-done")

    def ${name}_noted(self, notes: str | Text) -> Text:
        return Text("$name-noted", {"notes": notes})

    def ${name}_nothing(self) -> Text:
        return Text("$name-nothing")

    def ${name}_hint(self) -> Text:
        return Text("$name-hint")

    def ${name}_got(self, note: str) -> Text:
        return Text("$name-got", {"note": note})
""")

#: The node's messages, added to every `locales/<language>/bot.ftl` (in English: translate them).
FTL = Template("""
## The $name node (nodes/$name.py)
$name-ask = Write anything, then press { $name-done }.
$name-done = Done
$name-noted = Noted: { $$notes }
$name-nothing = nothing
$name-hint = Please write text or press { $name-done }.
$name-got = Got { $$note }
""")
