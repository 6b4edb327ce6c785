"""The revocation measurement, against small local HTTP servers that stand in for gateways.

Each stand-in answers 200 for a key until a set delay after that key's revocation, then 401,
so the measured times must reach the delays and name the slowest process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.bench.admin import IssuedKey
from tests.bench.revocation import (
    RevocationError,
    measure_revocations,
    measure_waited_revocations,
)


class _Gateway:
    """A stand-in gateway process: 401 for a key once ``delay`` has passed since its revocation."""

    def __init__(self, delay: float, status_before: int = 200) -> None:
        self.delay = delay
        self.revoked_at: dict[str, float] = {}
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                key_id = self.headers.get("X-AuthenticationKeyId", "")
                since = gateway.revoked_at.get(key_id)
                revoked = since is not None and time.perf_counter() - since >= gateway.delay
                self.send_response(401 if revoked else status_before)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Admin:
    def __init__(self, gateways: list[_Gateway]) -> None:
        self.gateways = gateways

    def revoke(self, key_id: str, wait: float | None = None) -> dict[str, Any]:
        now = time.perf_counter()
        for gateway in self.gateways:
            gateway.revoked_at[key_id] = now
        if wait is not None:
            # As key_service would: return once every process refuses the key.
            time.sleep(max((g.delay for g in self.gateways), default=0.0))
        n = len(self.gateways)
        return {"propagation": {"processes": n, "confirmed": n}}


@pytest.fixture
def gateways() -> Iterator[list[_Gateway]]:
    made = [_Gateway(0.02), _Gateway(0.06)]
    yield made
    for gateway in made:
        gateway.close()


def _keys(count: int) -> list[IssuedKey]:
    return [IssuedKey(f"00000000-0000-7000-8000-{i:012d}", "s" * 64) for i in range(count)]


def test_every_process_time_is_the_slowest_process(gateways: list[_Gateway]) -> None:
    result = measure_revocations(_Admin(gateways), _keys(5), [g.port for g in gateways])
    assert len(result.every_process_ms) == 5
    assert result.timed_out == 0
    fast, slow = (result.per_process_ms[g.port] for g in gateways)
    assert min(fast) >= 20.0
    assert min(slow) >= 60.0
    assert result.every_process_ms == [max(a, b) for a, b in zip(fast, slow, strict=True)]


def test_a_process_that_never_answers_401_is_counted_as_timed_out() -> None:
    never = _Gateway(3600.0)
    try:
        result = measure_revocations(_Admin([never]), _keys(2), [never.port], timeout_s=0.1)
    finally:
        never.close()
    assert result.timed_out == 2
    assert result.every_process_ms == []


def test_a_key_that_does_not_work_before_revocation_stops_the_measurement() -> None:
    broken = _Gateway(0.0, status_before=503)
    try:
        with pytest.raises(RevocationError, match="answered 503"):
            measure_revocations(_Admin([broken]), _keys(1), [broken.port])
    finally:
        broken.close()


def test_a_waited_revoke_is_timed_and_its_receipt_checked(gateways: list[_Gateway]) -> None:
    result = measure_waited_revocations(_Admin(gateways), _keys(3), [g.port for g in gateways])
    assert len(result.call_ms) == 3
    assert min(result.call_ms) >= 60.0
    assert (result.processes, result.incomplete, result.passed_after) == (2, 0, 0)


def test_a_receipt_that_lies_is_counted() -> None:
    slow = _Gateway(3600.0)
    try:
        admin = _Admin([])  # confirms at once, whatever the gateway does
        result = measure_waited_revocations(admin, _keys(2), [slow.port])
    finally:
        slow.close()
    assert result.passed_after == 2
