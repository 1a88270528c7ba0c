"""bot.remote."""
