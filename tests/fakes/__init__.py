"""The fakes behave as the real things: the lab's hosts and tools, the fake Bot API and
the console's limits."""
