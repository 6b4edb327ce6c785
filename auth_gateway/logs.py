"""JSON log lines, and the access log (key ID and request ID, never a secret)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time as _time
from datetime import UTC, datetime
from typing import TextIO

from .exchange import Exchange

__all__ = ["ACCESS_LINES", "AccessLog", "JsonFormatter", "LineBatcher", "setup_logging"]


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
    """Log lines written in batches: one write every ``FLUSH_SECONDS`` at most, not one per line.

    The first line after a flush schedules the next flush (``call_later``); a batch that
    reaches ``MAX_LINES`` is written at once, and outside a running loop a line is written at
    once. ``serve`` flushes what is left on the way out, so a clean stop loses nothing; a crash
    loses at most the last ``FLUSH_SECONDS`` of access lines (nginx's ``access_log ...
    buffer= flush=`` makes the same trade).
    """

    FLUSH_SECONDS = 0.05
    MAX_LINES = 512

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._pending: list[str] = []

    def add(self, line: str) -> None:
        """Queue ``line`` (without its newline) for the next flush."""
        pending = self._pending
        pending.append(line)
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)
            except RuntimeError:
                self.flush()
        elif len(pending) >= self.MAX_LINES:
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


class AccessLog:
    """One JSON line per request: key ID and request ID, never a secret.

    The path is logged without its query string, which may carry data the client considers
    private; credential headers are never logged. The line has the fields and layout of
    ``JsonFormatter``'s, but is built directly (no LogRecord) and written
    through ``ACCESS_LINES`` to stderr: the access log is the one log line of every request.
    Whether it is written at all follows the logger's level.
    """

    batcher: LineBatcher = ACCESS_LINES

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._name = _json(logger.name)
        self._second = -1
        self._ms_from = self._ms_until = 0.0  # the time.time() range _stamp_ms is right for
        self._stamp = ""
        self._stamp_ms = ""
        self._tails: dict[tuple[str | None, str, int, int, str, str | None, str | None], str] = {}

    def _time(self) -> str:
        """``datetime.isoformat(timespec="milliseconds")`` in UTC, formatted once per ms."""
        now = _time.time()
        if self._ms_from <= now < self._ms_until:
            return self._stamp_ms
        ms = int(now * 1000)
        self._ms_from, self._ms_until = ms / 1000, (ms + 1) / 1000
        second = ms // 1000
        if second != self._second:
            self._second = second
            self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        self._stamp_ms = f"{self._stamp}.{ms % 1000:03d}+00:00"
        return self._stamp_ms

    def log(self, exchange: Exchange, duration: float) -> None:
        """Log one finished request: what the handler's record and the server's request say."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        esc = _escape
        request = exchange.request
        rid = exchange.request_id
        status = request.status if request.started else 499
        # What recurs from request to request (the client, the verdict, the route) is rendered
        # once per distinct combination and remembered; only the time, the request ID, the
        # path and the duration are written for every line.
        key = (request.remote, request.method, status, request.body_bytes, exchange.label,
               exchange.key_id, exchange.auth)
        tail = self._tails.get(key)
        if tail is None:
            tail = self._tail(key)
        # This millisecond's stamp without a call (_time's own test), as a line is every request's.
        now = _time.time()
        stamp = self._stamp_ms if self._ms_from <= now < self._ms_until else self._time()
        # Every string goes through json's own (C) escaping; only the layout is written here.
        self.batcher.add(
            f'{{"time":"{stamp}","level":"info","logger":{self._name},'
            f'"message":"request","request_id":{esc(rid) if rid else "null"},'
            f'"path":{esc(request.target.partition("?")[0][:2048])},'
            f'"duration_ms":{"%.3f" % (duration * 1000)},{tail}'
        )

    def _tail(self, key: tuple[str | None, str, int, int, str, str | None, str | None]) -> str:
        """The rest of a line: ``"remote":...}``, remembered (within a bound) for ``key``."""
        remote, method, status, body_bytes, route, key_id, auth = key
        tail = (
            f'"remote":{_json(remote)},"method":{_escape(method)},"status":{status},'
            f'"bytes":{body_bytes},"route":{_escape(route)},"key_id":{_json(key_id)},'
            f'"auth":{_json(auth)}}}'
        )
        if len(self._tails) >= _TAILS_BOUND:
            self._tails.clear()  # a new generation: what recurs is back within a few lines
        self._tails[key] = tail
        return tail


_escape = json.encoder.encode_basestring_ascii
# Distinct line tails remembered (clients, methods, statuses, sizes, routes, key IDs and verdicts
# together); reaching the bound starts afresh, so a flood of made-up key IDs cannot grow it.
_TAILS_BOUND = 10_000


def _json(value: str | None) -> str:
    """``value`` as a JSON string literal (as ``json.dumps`` writes it), or null."""
    return "null" if value is None else _escape(value)
