"""The bot's flows end to end: the real bot over the fake Bot API against lab hosts."""
