"""Revocation propagation: from "the revoke call returned" to "every gateway process answers 401".

Each gateway process is reached on its own port, so every process is measured (a shared port
would leave it to the kernel which process answers). For each key: the key is first shown to
work at every process (so it sits in their caches, the case that matters), then revoked through
key_service's API; the clock starts when that call has returned, and each process is polled
over its own keep-alive connection, every few milliseconds, until it answers 401.

Then the same with ``revoke?wait=``: the time the call takes to return with every process
confirmed (its receipt), and, right after it returns, one request per process, which must be a
401 (the receipt's promise, checked on every revocation).
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .admin import IssuedKey
from .observer import EventObserver

__all__ = [
    "RevocationError", "RevocationResult", "WaitedResult", "measure_revocations",
    "measure_waited_revocations",
]


class RevocationError(RuntimeError):
    """A key did not work before its revocation, or a gateway answered something unexpected."""


@dataclass
class RevocationResult:
    """Milliseconds until every process answered 401, per revocation; timeouts counted apart."""

    every_process_ms: list[float] = field(default_factory=list)
    per_process_ms: dict[int, list[float]] = field(default_factory=dict)
    revoke_call_ms: list[float] = field(default_factory=list)
    timed_out: int = 0
    processes: int = 0
    stopped_early: bool = False  # the phase's time bound ended it before every key was revoked
    # When each revocation's event reached an observer subscriber, from the same instant.
    observer_ms: list[float] = field(default_factory=list)
    # Per process: key events received by source (amqp, feed), read from /metrics afterwards.
    event_sources: dict[int, dict[str, int]] = field(default_factory=dict)


@dataclass
class WaitedResult:
    """Revoke calls with ``wait``: how long each took, and whether the receipt held."""

    call_ms: list[float] = field(default_factory=list)
    incomplete: int = 0  # receipts that ran out of time with a process pending
    passed_after: int = 0  # requests answered 2xx right after a complete receipt (must be 0)
    processes: int = 0


class Revoker(Protocol):
    """What revokes a key: key_service's admin API (``AdminClient``) in the benchmark."""

    def revoke(self, key_id: str, wait: float | None = None) -> dict[str, Any]:
        """Revoke ``key_id``; returns key_service's answer once the revocation is committed
        (and, with ``wait``, confirmed or out of time)."""


class _Poller:
    def __init__(self, port: int) -> None:
        self.port = port
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def status(self, path: str, key: IssuedKey) -> int:
        self._conn.request("GET", path, headers=key.headers())
        resp = self._conn.getresponse()
        resp.read()
        if resp.will_close:
            self._conn.close()
        return resp.status

    def close(self) -> None:
        self._conn.close()


def measure_revocations(admin: Revoker, keys: Sequence[IssuedKey], ports: Sequence[int], *,
                        path: str = "/auth/", timeout_s: float = 10.0,
                        poll_interval_s: float = 0.002,
                        phase_limit_s: float = 90.0,
                        observer: EventObserver | None = None) -> RevocationResult:
    """Revoke each key in turn and time how long until every process on ``ports`` says 401.

    Between two polls of the same process the poller sleeps ``poll_interval_s``: polling back
    to back would have the measuring client take CPU from the processes it measures on a small
    machine, and the figures would then grow with the measurement itself.
    """
    pollers = [_Poller(port) for port in ports]
    result = RevocationResult(per_process_ms={p: [] for p in ports}, processes=len(ports))
    try:
        for key in keys:  # warm every key into every process
            for poller in pollers:
                status = poller.status(path, key)
                if status != 200:
                    raise RevocationError(
                        f"key {key.key_id} answered {status} at port {poller.port} "
                        "before its revocation"
                    )
        phase_end = time.perf_counter() + phase_limit_s
        for key in keys:
            if time.perf_counter() > phase_end:
                result.stopped_early = True  # keep `make bench` bounded when propagation is slow
                break
            called = time.perf_counter()
            admin.revoke(key.key_id)
            returned = time.perf_counter()
            result.revoke_call_ms.append((returned - called) * 1000.0)
            pending = list(pollers)
            seen: list[float] = []
            while pending:
                for poller in list(pending):
                    status = poller.status(path, key)
                    elapsed = (time.perf_counter() - returned) * 1000.0
                    if status == 401:
                        result.per_process_ms[poller.port].append(elapsed)
                        seen.append(elapsed)
                        pending.remove(poller)
                    elif status != 200:
                        raise RevocationError(
                            f"port {poller.port} answered {status} while revoking {key.key_id}"
                        )
                if pending and time.perf_counter() - returned > timeout_s:
                    result.timed_out += 1
                    break
                if pending:
                    time.sleep(poll_interval_s)
            else:
                result.every_process_ms.append(max(seen))
            if observer is not None and key.key_id in observer.arrivals:
                # May be negative: the event can beat the HTTP answer back to this client.
                result.observer_ms.append((observer.arrivals[key.key_id] - returned) * 1000.0)
    finally:
        for poller in pollers:
            poller.close()
    return result


def measure_waited_revocations(admin: Revoker, keys: Sequence[IssuedKey], ports: Sequence[int],
                               *, path: str = "/auth/", wait_s: float = 10.0,
                               phase_limit_s: float = 90.0) -> WaitedResult:
    """Revoke each key with ``?wait=``, timing the call; then ask every process once."""
    pollers = [_Poller(port) for port in ports]
    result = WaitedResult()
    try:
        for key in keys:
            for poller in pollers:
                if poller.status(path, key) != 200:
                    raise RevocationError(f"key {key.key_id} did not work before its revocation")
        phase_end = time.perf_counter() + phase_limit_s
        for key in keys:
            if time.perf_counter() > phase_end:
                break
            called = time.perf_counter()
            receipt = admin.revoke(key.key_id, wait=wait_s)["propagation"]
            result.call_ms.append((time.perf_counter() - called) * 1000.0)
            result.processes = max(result.processes, int(receipt["processes"]))
            if receipt["confirmed"] != receipt["processes"]:
                result.incomplete += 1
                continue
            result.passed_after += sum(
                1 for poller in pollers if poller.status(path, key) < 300
            )
    finally:
        for poller in pollers:
            poller.close()
    return result
