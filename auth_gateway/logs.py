"""JSON log lines, and the access log (key ID and request ID, never a secret)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .appkeys import AUTH_REASON, LOG_KEY_ID, REQUEST_ID, ROUTE_LABEL

__all__ = ["JsonAccessLogger", "JsonFormatter", "setup_logging"]


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


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp access logger writing one JSON line per request.

    The path is logged without its query string, which may carry data the client considers
    private; credential headers are never logged.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Log one finished request."""
        path = request.raw_path.partition("?")[0]
        fields = {
            "request_id": request.get(REQUEST_ID),
            "remote": request.remote,
            "method": request.method,
            "path": path[:2048],
            "status": response.status,
            "bytes": response.body_length,
            "duration_ms": round(time * 1000, 3),
            "route": request.get(ROUTE_LABEL),
            "key_id": request.get(LOG_KEY_ID),
            "auth": request.get(AUTH_REASON),
        }
        self.logger.info("request", extra={"fields": fields})
