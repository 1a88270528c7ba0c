"""Faults: Telegram, targets, storage and people failing under running work; crashes and
restarts."""
