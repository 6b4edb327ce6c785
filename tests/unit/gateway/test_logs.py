"""The access log: one JSON line per request with key ID and request ID, never a secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from types import SimpleNamespace
from typing import Any, cast

from auth_gateway.exchange import Exchange
from auth_gateway.logs import AccessLog, LineBatcher

SECRET = "s3cr3t-value-never-logged"


def _logger(stream: io.StringIO, level: int = logging.INFO) -> AccessLog:
    logger = logging.getLogger("auth_gateway.access.test")
    logger.setLevel(level)
    access = AccessLog(logger)
    access.batcher = LineBatcher(stream)
    return access


def _request(status: int = 200, **fields: Any) -> Exchange:
    """What the access log reads of a request: the handler's record (request ID, route label,
    key ID, verdict) and the server's Request it holds (what was asked and sent)."""
    values: dict[str, Any] = {
        "target": "/api/things?token=private", "method": "GET", "remote": "127.0.0.1",
        "headers": {"X-AuthenticationKeyId": "key_1", "X-AuthenticationKeyValue": SECRET},
        "request_id": "rid-1", "route": "/api/", "key_id": "key_1", "auth": "ok",
        "status": status, "started": True, "body_bytes": 3,
    }
    values.update(fields)
    record = {name: values.pop(name) for name in ("request_id", "key_id", "auth")}
    record["label"] = values.pop("route")
    return cast(Exchange, SimpleNamespace(request=SimpleNamespace(**values), **record))


async def test_lines_carry_the_fields_and_are_written_in_batches() -> None:
    stream = io.StringIO()
    access = _logger(stream)
    access.log(_request(), 0.0123)
    access.log(_request(401), 0.001)
    assert stream.getvalue() == ""  # written together a moment later
    await asyncio.sleep(LineBatcher.FLUSH_SECONDS * 2)
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
    _logger(stream).log(_request(204), 0.0)
    assert json.loads(stream.getvalue())["status"] == 204


def test_the_logger_level_still_decides() -> None:
    stream = io.StringIO()
    _logger(stream, logging.WARNING).log(_request(), 0.0)
    assert stream.getvalue() == ""


def test_odd_characters_are_escaped_and_the_time_is_iso_utc() -> None:
    stream = io.StringIO()
    request = _request(404, target='/a"b\\c/\u00e9\x01', request_id="")
    _logger(stream).log(request, 1.5)
    line = json.loads(stream.getvalue())
    assert line["path"] == '/a"b\\c/\u00e9\x01'
    assert line["request_id"] is None
    assert line["duration_ms"] == 1500.0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])
    assert stream.getvalue().isascii()


async def test_a_full_batch_is_written_at_once() -> None:
    stream = io.StringIO()
    access = _logger(stream)
    for _ in range(LineBatcher.MAX_LINES):
        access.log(_request(), 0.0)
    assert len(stream.getvalue().splitlines()) == LineBatcher.MAX_LINES


def test_a_request_abandoned_before_an_answer_is_logged_as_499() -> None:
    stream = io.StringIO()
    _logger(stream).log(_request(0, started=False, body_bytes=0), 0.2)
    assert json.loads(stream.getvalue())["status"] == 499


def test_remembered_parts_of_a_line_log_as_the_first_time() -> None:
    stream = io.StringIO()
    access = _logger(stream)
    odd = 'key"\u00e9\\1'
    for number in range(3):
        access.log(_request(key_id=odd, auth="wrong_secret", request_id=f"r{number}"), 0.0)
        access.log(_request(key_id="key_2", auth="ok", target=f"/api/{number}"), 0.0021)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["key_id"], line["auth"]) for line in lines] == [
        (odd, "wrong_secret"), ("key_2", "ok")] * 3
    # Only the remembered part is shared: what differs per request is each line's own.
    assert [line["request_id"] for line in lines[::2]] == ["r0", "r1", "r2"]
    assert [line["path"] for line in lines[1::2]] == ["/api/0", "/api/1", "/api/2"]
    assert {line["duration_ms"] for line in lines[1::2]} == {2.1}
    assert all(line["remote"] == "127.0.0.1" and line["bytes"] == 3 for line in lines)
    assert stream.getvalue().isascii()


def test_remembered_parts_stay_bounded() -> None:
    from auth_gateway import logs

    stream = io.StringIO()
    access = _logger(stream)
    for number in range(logs._TAILS_BOUND + 50):
        access.log(_request(key_id=f"made-up-{number}", auth="unknown"), 0.0)
    assert len(access._tails) <= logs._TAILS_BOUND
    last = json.loads(stream.getvalue().splitlines()[-1])
    assert last["key_id"] == f"made-up-{logs._TAILS_BOUND + 49}"
