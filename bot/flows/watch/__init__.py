"""bot.flows.watch."""
