"""JSON logs: one object per line on stderr, each carrying the request ID of its request.

Log calls pass only what is safe to show: never a secret, hash, pepper, password, session ID,
cookie or token. Access lines name the path without its query string and no headers at all.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

__all__ = ["REQUEST_ID", "JsonFormatter", "configure_logging", "quiet_third_party_loggers"]

# The current request's ID; every line logged while handling that request carries it.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "key_service_request_id", default=None
)
# Attributes of every LogRecord; anything else given through ``extra=`` goes into the line.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != "request_id":
                line[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The type and the traceback, not the message: driver messages can quote values.
            line["exception"] = record.exc_info[0].__name__
            line["traceback"] = "".join(traceback.format_tb(record.exc_info[2]))
        # ASCII only: no character in a path or message can break the line (U+2028, NEL...).
        return json.dumps(line, default=str, ensure_ascii=True)


# Libraries whose DEBUG lines would carry bound values or message bodies (a secret hash, a signed
# record): held at WARNING whatever the service's own level is.
_NOISY = ("sqlalchemy", "aiosqlite", "asyncpg", "aiormq", "aio_pika", "alembic.runtime")


def quiet_third_party_loggers() -> None:
    """Hold the loggers of drivers and clients at WARNING (called by create_app)."""
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(level: str = "INFO") -> None:
    """Send every log line, as JSON, to stderr (called once by the command line)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's own access log is replaced by ours (key_service.access).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
