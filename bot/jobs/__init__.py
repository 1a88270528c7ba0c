"""bot.jobs."""
