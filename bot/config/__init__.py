"""bot.config."""
