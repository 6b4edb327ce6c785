"""Problem responses, JSON log lines, request IDs and client addresses behind proxies."""

from __future__ import annotations

import json
import logging
import sys

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from apikeys_shared.config import Env, generate_secrets, load_secrets
from key_service.appkeys import CONFIG
from key_service.config import KeyServiceConfig
from key_service.logs import REQUEST_ID, JsonFormatter
from key_service.middleware import client_address, request_id
from key_service.problems import problem


def _config(trusted: tuple[str, ...]) -> KeyServiceConfig:
    values = generate_secrets()
    return KeyServiceConfig(
        secrets=load_secrets(Env(values), signer=True, verifier=False),
        database_url="sqlite+aiosqlite:///x.db", data_dir=__import__("pathlib").Path("."),
        trusted_proxies=trusted,
    )


def _request(headers: dict[str, str], peer: str, trusted: tuple[str, ...]) -> web.Request:
    app = web.Application()
    app[CONFIG] = _config(trusted)
    request = make_mocked_request("GET", "/x", headers=headers, app=app)
    return request.clone(remote=peer)


def test_problem_body_and_headers() -> None:
    resp = problem(400, "name must be a string", field="name", headers={"Retry-After": "3"})
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"
    assert resp.headers["Retry-After"] == "3"
    assert resp.text is not None
    assert json.loads(resp.text) == {
        "type": "about:blank", "title": "Bad Request", "status": 400,
        "detail": "name must be a string", "field": "name",
    }


def test_client_address_ignores_forwarded_for_from_untrusted_peers() -> None:
    req = _request({"X-Forwarded-For": "203.0.113.9"}, "198.51.100.1", ())
    assert client_address(req) == "198.51.100.1"
    req = _request({"X-Forwarded-For": "203.0.113.9"}, "198.51.100.1", ("10.0.0.0/8",))
    assert client_address(req) == "198.51.100.1"


def test_client_address_takes_the_nearest_untrusted_hop() -> None:
    headers = {"X-Forwarded-For": "1.2.3.4, 203.0.113.9, 10.0.0.2"}
    req = _request(headers, "10.0.0.1", ("10.0.0.0/8",))
    assert client_address(req) == "203.0.113.9"
    req = _request({}, "10.0.0.1", ("10.0.0.0/8",))
    assert client_address(req) == "10.0.0.1"


def test_request_ids_are_kept_only_when_plain() -> None:
    req = _request({"X-Request-Id": "abc-123"}, "127.0.0.1", ())
    assert request_id(req) == "abc-123"
    assert request_id(req) == "abc-123"
    for bad in ('a"b', "x" * 65, "a b", "ü"):
        req = _request({"X-Request-Id": bad}, "127.0.0.1", ())
        assert request_id(req) != bad
        assert len(request_id(req)) == 36


def test_json_lines_carry_the_request_id_and_extras() -> None:
    token = REQUEST_ID.set("rid-1")
    try:
        record = logging.LogRecord("key_service.x", logging.INFO, __file__, 1, "hello %s",
                                   ("world",), None)
        record.status = 201
        line = json.loads(JsonFormatter().format(record))
    finally:
        REQUEST_ID.reset(token)
    assert line["message"] == "hello world"
    assert line["request_id"] == "rid-1"
    assert line["status"] == 201
    assert line["level"] == "INFO"


def test_exceptions_are_logged_without_their_message() -> None:
    value = "-".join(["secret", "value", "inside"])
    try:
        raise ValueError(value)
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert line["exception"] == "ValueError"
    assert value not in json.dumps(line)


def test_a_line_stays_one_line_whatever_it_carries() -> None:
    record = logging.LogRecord("key_service.access", logging.INFO, __file__, 1, "request", (),
                               None)
    record.path = "/api/v1/keys/a\u2028b\x85c\nd\"e"
    text = JsonFormatter().format(record)
    assert text.isascii()
    assert len(text.splitlines()) == 1
    assert json.loads(text)["path"] == record.path
