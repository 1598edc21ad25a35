"""Every text the bot's nodes show, one method per message id of `locales/*/bot.ftl`.

Nodes write `ctx.texts.hungry_added(dish=text)`, never an id as a string: mypy then checks the
name and the values of every text, and tests/test_bot_texts.py checks that each id built here
exists in every language with the same variables, and that no language has ids nobody uses.
To add a text: a method here, and the message in every `locales/<language>/bot.ftl`.
The runtime's own texts (a stale button, Redis away, `/language`) are in the same files; their
ids are listed in `botnodes/telegram/texts.py`.
"""

from __future__ import annotations

from pathlib import Path

from botnodes.telegram import Catalog, Text

#: The bot's languages, one folder per language code, parsed once per process.
CATALOG = Catalog(Path(__file__).parent / "locales")


class Texts:
    """The bot's texts; each method returns a `Text`, rendered in the user's language."""

    # The main menu (nodes/start.py)
    def start_greeting_first(self, username: str) -> Text:
        return Text("start-greeting-first", {"username": username})

    def start_greeting_again(self) -> Text:
        return Text("start-greeting-again")

    def start_yes(self) -> Text:
        return Text("start-yes")

    def start_no(self) -> Text:
        return Text("start-no")

    def start_unknown(self) -> Text:
        return Text("start-unknown")

    # The order (nodes/hungry.py)
    def hungry_ask(self, cart: str | Text) -> Text:
        return Text("hungry-ask", {"cart": cart})

    def hungry_cart_empty(self) -> Text:
        return Text("hungry-cart-empty")

    def hungry_finish_empty(self) -> Text:
        return Text("hungry-finish-empty")

    def hungry_ordering(self, cart: str | Text) -> Text:
        return Text("hungry-ordering", {"cart": cart})

    def hungry_cancelled(self) -> Text:
        return Text("hungry-cancelled")

    def hungry_name_too_long(self, limit: int) -> Text:
        return Text("hungry-name-too-long", {"limit": limit})

    def hungry_cart_full(self, limit: int) -> Text:
        return Text("hungry-cart-full", {"limit": limit})

    def hungry_added(self, dish: str) -> Text:
        return Text("hungry-added", {"dish": dish})

    def hungry_expired(self) -> Text:
        return Text("hungry-expired")

    def hungry_reminder(self, cart: str | Text) -> Text:
        return Text("hungry-reminder", {"cart": cart})

    def hungry_cart_newest(self, count: int, shown: int, items: str) -> Text:
        return Text("hungry-cart-newest", {"count": count, "shown": shown, "items": items})

    def hungry_order_failed(self) -> Text:
        return Text("hungry-order-failed")

    def hungry_ordered(self) -> Text:
        return Text("hungry-ordered")

    # Checkout, with payments on (nodes/checkout.py)
    def checkout_title(self) -> Text:
        return Text("checkout-title")

    def checkout_description(self, cart: str | Text) -> Text:
        return Text("checkout-description", {"cart": cart})

    def checkout_pay(self, total: str) -> Text:
        return Text("checkout-pay", {"total": total})

    def checkout_cancelled(self) -> Text:
        return Text("checkout-cancelled")

    def checkout_quote_refused(self) -> Text:
        return Text("checkout-quote-refused")

    def checkout_quote_failed(self) -> Text:
        return Text("checkout-quote-failed")

    # What the payment desk says (botnodes/telegram/payments.py reads these by name)
    def payment_stale(self) -> Text:
        return Text("payment-stale")

    def payment_mismatch(self) -> Text:
        return Text("payment-mismatch")

    def payment_already_paid(self) -> Text:
        return Text("payment-already-paid")

    def payment_try_again(self) -> Text:
        return Text("payment-try-again")

    def payment_ordered(self) -> Text:
        return Text("hungry-ordered")

    def payment_unconfirmed(self) -> Text:
        return Text("payment-unconfirmed")

    def payment_refunded(self, total: str) -> Text:
        return Text("payment-refunded", {"total": total})

    def payment_refund_pending(self, total: str) -> Text:
        return Text("payment-refund-pending", {"total": total})

    def payment_support(self) -> Text:
        return Text("payment-support")

    def payment_terms(self) -> Text:
        return Text("payment-terms")

    def staff_paid(self, user: str, total: str, items: str, charge: str) -> Text:
        return Text("staff-paid", {"user": user, "total": total, "items": items, "charge": charge})

    def staff_refund(self, user: str, total: str, charge: str, reason: str) -> Text:
        return Text(
            "staff-refund", {"user": user, "total": total, "charge": charge, "reason": reason}
        )

    # Buttons: the English word is what a press carries; typed, any language's word works
    def button_yes(self) -> Text:
        return Text("button-yes")

    def button_no(self) -> Text:
        return Text("button-no")

    def button_finish(self) -> Text:
        return Text("button-finish")

    def button_cancel(self) -> Text:
        return Text("button-cancel")


#: The one instance everything uses (also `ctx.texts`).
TEXTS = Texts()
