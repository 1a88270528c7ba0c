"""Logging that cannot leak: the bot token is masked, chatty HTTP loggers are quiet, and
no record of python-telegram-bot carries a whole payload."""

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


#: PTB's records that carry a whole Bot API payload, by logger (docs/telegram.md, "Logs
#: that leak"): an update it could not parse (webhook mode), an answer that is not JSON.
PAYLOAD_RECORDS = {
    "telegram.ext.Updater": "Received data was",
    "telegram.request.BaseRequest": "invalid JSON data",
}


class DropPayloads(logging.Filter):
    """Keep the first words of such a record and drop the payload (its arguments and the
    exception, whose message may quote it): an update holds what a person typed."""

    def filter(self, record: logging.LogRecord) -> bool:
        needle = PAYLOAD_RECORDS.get(record.name)
        if needle is not None and needle in str(record.msg):
            head = str(record.msg).split(needle)[0].rstrip(" :!*")
            record.msg = f"{head} (the data is not logged: it may hold what a person typed)"
            record.args, record.exc_info, record.exc_text = None, None, None
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
    # A logger's filters see only its own records: each of those loggers gets one.
    for name in PAYLOAD_RECORDS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropPayloads) for f in logger.filters):
            logger.addFilter(DropPayloads())
