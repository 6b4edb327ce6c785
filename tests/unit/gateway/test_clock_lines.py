"""The Date header and the access log's timestamp, which are formatted once and reused."""

from __future__ import annotations

import logging
from email.utils import formatdate
from types import SimpleNamespace

import pytest

from auth_gateway import http_server, logs
from auth_gateway.logs import AccessLog


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(1_800_000_000.25)
    monkeypatch.setattr(http_server, "time", SimpleNamespace(time=fake.time))
    monkeypatch.setattr(logs, "_time", SimpleNamespace(time=fake.time))
    monkeypatch.setattr(http_server, "_date_until", 0.0)
    return fake


def _date(second: int) -> bytes:
    return b"Date: " + formatdate(second, usegmt=True).encode() + b"\r\n"


def test_the_date_line_follows_the_clock_second_by_second(clock: Clock) -> None:
    start = 1_800_000_000
    assert http_server.date_header() == _date(start)
    clock.now = start + 0.999
    assert http_server.date_header() == _date(start)
    clock.now = start + 1.0
    assert http_server.date_header() == _date(start + 1)
    clock.now = start - 5.5  # stepped back: not the line of a later second
    assert http_server.date_header() == _date(start - 6)
    clock.now = start + 3600.1
    assert http_server.date_header() == _date(start + 3600)


def test_the_access_log_stamp_follows_the_clock_ms_by_ms(clock: Clock) -> None:
    access = AccessLog(logging.getLogger("test.clock"))
    assert access._time() == "2027-01-15T08:00:00.250+00:00"
    clock.now += 0.0004
    assert access._time() == "2027-01-15T08:00:00.250+00:00"
    clock.now += 0.001
    assert access._time() == "2027-01-15T08:00:00.251+00:00"
    clock.now += 1.0
    assert access._time() == "2027-01-15T08:00:01.251+00:00"
    clock.now -= 2.0  # stepped back
    assert access._time() == "2027-01-15T07:59:59.251+00:00"
