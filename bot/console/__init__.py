"""bot.console."""
