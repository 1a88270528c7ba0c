"""bot.flows."""
