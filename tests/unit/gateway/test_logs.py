"""The access log: one JSON line per request with key ID and request ID, never a secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from auth_gateway.appkeys import AUTH_REASON, LOG_KEY_ID, REQUEST_ID, ROUTE_LABEL
from auth_gateway.logs import JsonAccessLogger, LineBatcher

SECRET = "s3cr3t-value-never-logged"


def _logger(stream: io.StringIO, level: int = logging.INFO) -> JsonAccessLogger:
    logger = logging.getLogger("auth_gateway.access.test")
    logger.setLevel(level)
    access = JsonAccessLogger(logger, "")
    access.batcher = LineBatcher(stream)
    return access


def _request() -> web.Request:
    request = make_mocked_request(
        "GET", "/api/things?token=private",
        headers={"X-AuthenticationKeyId": "key_1", "X-AuthenticationKeyValue": SECRET},
    )
    request[REQUEST_ID] = "rid-1"
    request[ROUTE_LABEL] = "/api/"
    request[LOG_KEY_ID] = "key_1"
    request[AUTH_REASON] = "ok"
    return request


async def test_lines_carry_the_fields_and_are_batched_per_loop_turn() -> None:
    stream = io.StringIO()
    access = _logger(stream)
    access.log(_request(), web.Response(status=200, body=b"abc"), 0.0123)
    access.log(_request(), web.Response(status=401), 0.001)
    assert stream.getvalue() == ""  # written together at the end of this turn
    await asyncio.sleep(0)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["level"] == "info"
    assert first["message"] == "request"
    assert first["request_id"] == "rid-1"
    assert first["key_id"] == "key_1"
    assert first["route"] == "/api/"
    assert first["auth"] == "ok"
    assert first["method"] == "GET"
    assert first["path"] == "/api/things"
    assert first["status"] == 200
    assert first["duration_ms"] == 12.3
    assert "time" in first
    assert json.loads(lines[1])["status"] == 401
    assert SECRET not in stream.getvalue()
    assert "private" not in stream.getvalue()


def test_outside_a_loop_lines_are_written_at_once() -> None:
    stream = io.StringIO()
    _logger(stream).log(_request(), web.Response(status=204), 0.0)
    assert json.loads(stream.getvalue())["status"] == 204


def test_the_logger_level_still_decides() -> None:
    stream = io.StringIO()
    _logger(stream, logging.WARNING).log(_request(), web.Response(status=200), 0.0)
    assert stream.getvalue() == ""


def test_odd_characters_are_escaped_and_the_time_is_iso_utc() -> None:
    stream = io.StringIO()
    request = make_mocked_request("GET", '/a"b\\c/\u00e9\x01')
    _logger(stream).log(request, web.Response(status=404), 1.5)
    line = json.loads(stream.getvalue())
    assert line["path"] == '/a"b\\c/\u00e9\x01'
    assert line["request_id"] is None
    assert line["duration_ms"] == 1500.0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])
    assert stream.getvalue().isascii()
