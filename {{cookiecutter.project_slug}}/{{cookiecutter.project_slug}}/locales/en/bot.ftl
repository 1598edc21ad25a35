# The bot's English texts: the reference every other language is checked against.
# One message per text the user sees; `{ $name }` is a value the code passes in.
# Add a text: a line here, the same id in every other language, a method in texts.py.

## The main menu (nodes/start.py)
start-greeting-first = Hello, { $username }! Are you hungry?
start-greeting-again = Again main menu! Are you hungry?
start-yes = No worries, I've got you back!
start-no = Write me when you are ready then!
start-unknown = Say what?

## The order (nodes/hungry.py)
hungry-ask = What are you gonna order? Cart: { $cart }
hungry-cart-empty = Empty
hungry-finish-empty = Cart is empty! Write { button-cancel } to cancel the order
hungry-ordering = Ordering { $cart }
hungry-cancelled = Order cancelled!
hungry-name-too-long = That's a long name! A dish name has at most { $limit } characters: please write it shorter.
hungry-cart-full = Your cart is full ({ $limit } items). Write { button-finish } to order it or { button-cancel } to start over.
hungry-added = Added { $dish }
hungry-expired = Your cart expired.
hungry-reminder = Still hungry? Your cart: { $cart }
# A cart too long for one message: how many items it has, and its newest ones.
hungry-cart-newest = { $count } items, the last { $shown }: …, { $items }
hungry-order-failed = Error
hungry-ordered = Ordered!

## Checkout, with payments on (nodes/checkout.py)
checkout-title = Your food order
checkout-description = { $cart }
checkout-pay = To pay { $total }, press Pay on the invoice above. { button-cancel } drops the order.
checkout-cancelled = Order cancelled! The invoice above can no longer be paid.
checkout-quote-refused = Sorry, we can't take this order. Your cart is kept: change it, or write { button-cancel }.
checkout-quote-failed = Sorry, I couldn't get the price just now. Your cart is kept: write { button-finish } again in a moment.

## Payments (answers to Telegram's payment updates)
payment-stale = This invoice is out of date. Please order again.
payment-mismatch = This invoice doesn't match your order.
payment-already-paid = This invoice is already paid.
payment-try-again = Sorry, I can't check this payment right now. Please try again in a moment.
payment-unconfirmed = You paid, but the restaurant hasn't confirmed your order yet. Our staff will check it and get back to you.
payment-refunded = The restaurant couldn't take your order, so your { $total } has been refunded.
payment-refund-pending = The restaurant couldn't take your order. A refund of { $total } is on its way.
payment-support = Trouble with a payment? Write to us here with what happened, and we'll sort it out. Refunds go back to how you paid.
payment-terms = You pay for the food in your cart when you order. If the restaurant can't take a paid order, you get your money back.
# The staff chat (STAFF_CHAT_ID) reads these in the default language.
staff-paid = Paid order from { $user }: { $items }. Total { $total } (charge { $charge }).
staff-refund = Refund to make: { $total } to { $user } (charge { $charge }). Reason: { $reason }

## Buttons: a typed word works like its button, in every language
button-yes = Yes
button-no = No
button-finish = Finish
button-cancel = Cancel

## Whatever node the user is on
not-text = I only understand text messages.
stale-press = This menu is out of date.
state-unavailable = Sorry, I can't reach my memory right now. Please try again in a moment.
user-busy = I'm still working on your earlier messages. Please send that again in a moment.
transition-lost = Sorry, I couldn't save that step, so I'm still where we were. Please send it again.
state-too-large = Sorry, that would make our conversation too big for me to keep, so I'm still where we were. Please finish or cancel what we're doing first.

## /language
language-name = English
language-menu = Choose your language:
language-chosen = I'll speak English with you from now on.
