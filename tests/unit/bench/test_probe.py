"""The timing probe's plan and checks, against a small local server standing in for a gateway."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apikeys_shared.keys import generate_secret, new_key_id
from tests.bench.admin import IssuedKey
from tests.bench.probe import (
    HALF_RIGHT,
    UNKNOWN_ID,
    UNKNOWN_SEEN,
    WRONG_SECRET,
    ProbeError,
    run_probe,
)

KEY = IssuedKey(new_key_id(), generate_secret())


def _serve(grant_all: bool) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            right = (self.headers.get("X-AuthenticationKeyId") == KEY.key_id
                     and self.headers.get("X-AuthenticationKeyValue") == KEY.secret)
            self.send_response(200 if right or grant_all else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def honest() -> Iterator[int]:
    server = _serve(grant_all=False)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_probe_collects_every_class_and_tests_them(honest: int) -> None:
    result = run_probe(honest, KEY, per_class=60, unknown=20, warmup=9, connections=2, seed=1)
    assert len(result.samples[WRONG_SECRET]) == 60
    assert len(result.samples[HALF_RIGHT]) == 60
    assert len(result.samples[UNKNOWN_ID]) == 20
    assert len(result.samples[UNKNOWN_SEEN]) == 20
    assert result.secret_test is not None
    assert 0.0 <= result.secret_test.p_value <= 1.0
    assert result.reconnects == 0


def test_probe_refuses_a_gateway_that_lets_a_wrong_secret_through() -> None:
    server = _serve(grant_all=True)
    try:
        with pytest.raises(ProbeError, match="answered 200, expected 401"):
            run_probe(server.server_address[1], KEY, per_class=5, unknown=1, warmup=3)
    finally:
        server.shutdown()
        server.server_close()
