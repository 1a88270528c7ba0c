"""bot.flows.deploy."""
