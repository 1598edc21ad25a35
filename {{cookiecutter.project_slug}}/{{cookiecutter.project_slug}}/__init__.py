"""A Telegram food-ordering bot: aiogram 3 for Telegram, botnodes + Redis for user state."""
