"""Logging that cannot leak: the bot token is masked and chatty HTTP loggers are quiet."""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"\b\d{3,12}:[A-Za-z0-9_-]{20,}\b")


class RedactTokens(logging.Filter):
    """Mask anything shaped like a bot token (``123456:ABC…``) in every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _TOKEN.sub("<token>", message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactTokens())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL, and Bot API URLs contain the token.
    for name in ("httpx", "httpcore", "telegram", "apscheduler", "asyncssh"):
        logging.getLogger(name).setLevel(logging.WARNING)
