"""JSON log lines, and the access log (key ID and request ID, never a secret)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time as _time
from datetime import UTC, datetime
from typing import TextIO

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .appkeys import AUTH_REASON, LOG_KEY_ID, REQUEST_ID, ROUTE_LABEL

__all__ = ["ACCESS_LINES", "JsonAccessLogger", "JsonFormatter", "LineBatcher", "setup_logging"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={"fields": {...}}`` adds fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as JSON."""
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def setup_logging(level: str) -> None:
    """Send every log line to stderr as JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("auth_gateway.access").setLevel(logging.INFO)


class LineBatcher:
    """Log lines written in batches: one write per turn of the event loop, not one per line.

    The first line of a turn schedules a flush with ``call_soon``, so a line waits at most for
    the callbacks already queued in that turn; outside a running loop a line is written at once.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._pending: list[str] = []

    def add(self, line: str) -> None:
        """Queue ``line`` (without its newline) for the next flush."""
        self._pending.append(line)
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        """Write every queued line now."""
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        stream = self._stream or sys.stderr
        lines.append("")
        stream.write("\n".join(lines))
        stream.flush()


# Shared by every access logger of the process; ``serve`` flushes it once more on the way out.
ACCESS_LINES = LineBatcher()


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp access logger writing one JSON line per request.

    The path is logged without its query string, which may carry data the client considers
    private; credential headers are never logged. The line has the fields and layout of
    ``JsonFormatter``'s, but is built directly (no LogRecord) and written
    through ``ACCESS_LINES`` to stderr: the access log is the one log line of every request.
    Whether it is written at all follows the access logger's level.
    """

    batcher: LineBatcher = ACCESS_LINES

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._second = -1
        self._stamp = ""

    def _time(self) -> str:
        """``datetime.isoformat(timespec="milliseconds")`` in UTC, formatted once per second."""
        now = _time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._stamp}.{int((now - second) * 1000):03d}+00:00"

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Log one finished request."""
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        path = request.raw_path.partition("?")[0]
        # Every string goes through json's own (C) escaping; only the layout is written here.
        self.batcher.add(
            f'{{"time":"{self._time()}","level":"info","logger":{_json(logger.name)},'
            f'"message":"request","request_id":{_json(request.get(REQUEST_ID))},'
            f'"remote":{_json(request.remote)},"method":{_json(request.method)},'
            f'"path":{_json(path[:2048])},"status":{int(response.status)},'
            f'"bytes":{int(response.body_length)},"duration_ms":{round(time * 1000, 3)!r},'
            f'"route":{_json(request.get(ROUTE_LABEL))},"key_id":{_json(request.get(LOG_KEY_ID))},'
            f'"auth":{_json(request.get(AUTH_REASON))}}}'
        )


_escape = json.encoder.encode_basestring_ascii


def _json(value: str | None) -> str:
    """``value`` as a JSON string literal (as ``json.dumps`` writes it), or null."""
    return "null" if value is None else _escape(value)
