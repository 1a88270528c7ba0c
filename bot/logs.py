"""Logging that cannot leak: the bot token is masked and chatty HTTP loggers are quiet."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

# Anything shaped like a bot token (``123456:ABC…``). No ``\b`` in front: in Bot API URLs
# the token follows ``/bot`` directly (``/bot123456:ABC…/getMe``), where no word boundary is.
_TOKEN = re.compile(r"(?<![0-9])\d{3,12}:[A-Za-z0-9_-]{20,}(?![A-Za-z0-9_-])")
MASK = "<token>"


class RedactTokens(logging.Filter):
    """Mask the configured token itself, and anything shaped like a token, in every record."""

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        super().__init__()
        self.tokens = sorted({t for t in tokens if t}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = message
        for token in self.tokens:
            masked = masked.replace(token, MASK)
        masked = _TOKEN.sub(MASK, masked)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def setup_logging(level: int = logging.INFO, *, token: str | None = None) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactTokens([token] if token else []))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL, and Bot API URLs contain the token.
    for name in ("httpx", "httpcore", "telegram", "apscheduler", "asyncssh"):
        logging.getLogger(name).setLevel(logging.WARNING)
