"""Which keys this process authenticated, and when: noted per request, reported to key_service.

Three parts, kept apart so that the rules can be tested without a clock or a network
(docs/operations.md, "Key usage", says what an operator can rely on):

* ``UsageRecorder.note`` is the request path's half: per key, the wall-clock time of the last
  request this process authenticated and a count, in two dicts. No I/O, no lock, no task; a
  request pays a clock read and two dict updates. A request counts once its verdict lets it
  through (forwarded upstream, whatever the upstream then answers; forward-auth's 204).
* ``UsageBuffer`` holds the batches ``take`` makes, oldest first, while key_service cannot take
  them, up to a bound in key entries (``GATEWAY_USAGE_BUFFER_KEYS``). Past it the oldest entries
  go, and the requests they counted are added to ``gateway_usage_dropped_requests``.
* ``UsageReporter`` moves what was noted into the buffer every ``GATEWAY_USAGE_REPORT_INTERVAL``
  seconds and sends the buffer, oldest first, until a send fails; once more at SIGTERM, after
  the requests in flight have drained.

A batch covers one UTC day (a process that counts across midnight makes one batch per day) and
at most ``MAX_BATCH_KEYS`` keys, and carries a random ID: key_service drops a batch whose ID it
has already stored, so a batch sent again after a timeout (whose first try did arrive) is not
counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from .errors import KeyServiceUnavailable

__all__ = [
    "MAX_BATCH_KEYS",
    "BatchRefused",
    "UsageBatch",
    "UsageBuffer",
    "UsageRecorder",
    "UsageReporter",
]

log = logging.getLogger("auth_gateway.usage")

# Keys per batch: as many as key_service takes in one report (some 12 KiB of JSON).
MAX_BATCH_KEYS = 100
_DAY = 86400


class BatchRefused(Exception):
    """key_service refused a batch (a 4xx): sending it again cannot succeed."""


@dataclass(frozen=True)
class UsageBatch:
    """What one process noted for up to ``MAX_BATCH_KEYS`` keys on one UTC day.

    ``keys`` maps a key ID to (last use, as Unix seconds; requests counted).
    """

    batch_id: str
    day: date
    keys: dict[str, tuple[float, int]]

    @property
    def requests(self) -> int:
        """Requests this batch counts."""
        return sum(count for _, count in self.keys.values())

    def to_json(self) -> dict[str, object]:
        """The body of ``POST /internal/v1/usage``."""
        return {
            "batch_id": self.batch_id,
            "day": self.day.isoformat(),
            "keys": [
                {"key_id": key_id, "last_used_at": _rfc3339(last), "count": count}
                for key_id, (last, count) in self.keys.items()
            ],
        }


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _batch_id() -> str:
    return os.urandom(16).hex()


class UsageRecorder:
    """Per key, the last time this process authenticated it and how often, since the last
    ``take``; see the module docstring."""

    __slots__ = ("_clock", "_closed", "_counts", "_day", "_day_end", "_last")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._last: dict[str, float] = {}
        # Days that ended before a take: (day number, counts, last uses).
        self._closed: list[tuple[int, dict[str, int], dict[str, float]]] = []
        self._day = int(clock() // _DAY)
        self._day_end = (self._day + 1) * _DAY

    def note(self, key_id: str) -> None:
        """Count one authenticated request for ``key_id``, now. On every such request."""
        now = self._clock()
        if now >= self._day_end:
            self._next_day(now)
        counts = self._counts
        counts[key_id] = counts.get(key_id, 0) + 1
        self._last[key_id] = now

    def _next_day(self, now: float) -> None:
        if self._counts:
            self._closed.append((self._day, self._counts, self._last))
            self._counts, self._last = {}, {}
        self._day = int(now // _DAY)
        self._day_end = (self._day + 1) * _DAY

    def take(self) -> list[UsageBatch]:
        """Everything noted since the last take, as batches (oldest day first); then forget it."""
        now = self._clock()
        if now >= self._day_end:
            self._next_day(now)
        days = self._closed
        if self._counts:
            days.append((self._day, self._counts, self._last))
        self._closed, self._counts, self._last = [], {}, {}
        batches: list[UsageBatch] = []
        for number, counts, last in days:
            day = date.fromordinal(date(1970, 1, 1).toordinal() + number)
            items = [(key_id, (last[key_id], count)) for key_id, count in counts.items()]
            for start in range(0, len(items), MAX_BATCH_KEYS):
                batches.append(UsageBatch(
                    _batch_id(), day, dict(items[start:start + MAX_BATCH_KEYS])))
        return batches


class UsageBuffer:
    """Batches waiting for key_service, oldest first, holding at most ``max_keys`` key entries.

    Past the bound the oldest entries go (whole batches, and from the oldest batch left as many
    entries as it takes); ``on_drop`` is told how many requests they counted. The bound covers
    everything not yet delivered, the report about to be sent included.
    """

    def __init__(self, max_keys: int, on_drop: Callable[[int], None]) -> None:
        self._max = max_keys
        self._on_drop = on_drop
        self._batches: deque[UsageBatch] = deque()
        self._keys = 0

    @property
    def pending_keys(self) -> int:
        """Key entries held."""
        return self._keys

    @property
    def pending_requests(self) -> int:
        """Requests the batches held count."""
        return sum(batch.requests for batch in self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    def add(self, batches: Iterable[UsageBatch]) -> None:
        """Queue ``batches`` behind those held, then drop the oldest past the bound."""
        for batch in batches:
            self._batches.append(batch)
            self._keys += len(batch.keys)
        self._trim()

    def put_back(self, batch: UsageBatch) -> None:
        """Return a batch taken with ``pop`` (its send failed) to the front."""
        self._batches.appendleft(batch)
        self._keys += len(batch.keys)
        self._trim()

    def pop(self) -> UsageBatch | None:
        """The oldest batch, taken out (``put_back`` returns it), or None when empty."""
        if not self._batches:
            return None
        batch = self._batches.popleft()
        self._keys -= len(batch.keys)
        return batch

    def drop(self, batch: UsageBatch) -> None:
        """Give up a batch taken with ``pop``: counted as dropped."""
        self._on_drop(batch.requests)

    def _trim(self) -> None:
        while self._keys > self._max:
            oldest = self._batches[0]
            excess = self._keys - self._max
            if len(oldest.keys) <= excess:
                self._batches.popleft()
                self._keys -= len(oldest.keys)
                self._on_drop(oldest.requests)
                continue
            # Part of a batch: it keeps its ID, so that if an earlier try of it did arrive,
            # the rest is not counted a second time (what went is then counted as dropped
            # although it arrived: drops are an upper bound).
            requests = 0
            for _ in range(excess):
                requests += oldest.keys.popitem()[1][1]
            self._keys -= excess
            self._on_drop(requests)


Send = Callable[[UsageBatch], Awaitable[None]]


class UsageReporter:
    """Moves what the recorder noted into the buffer, and the buffer to key_service.

    ``send`` raises KeyServiceUnavailable when the batch may be sent again later, BatchRefused
    when it never can be (the batch is then dropped).
    """

    def __init__(self, recorder: UsageRecorder, buffer: UsageBuffer, send: Send, *,
                 interval: float, on_change: Callable[[int], None] | None = None) -> None:
        self._recorder = recorder
        self._buffer = buffer
        self._send = send
        self._interval = interval
        self._on_change = on_change
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def flush(self) -> bool:
        """Buffer what was noted, then send the buffer oldest first; False when a send failed
        (that batch and the later ones stay buffered)."""
        buffer = self._buffer
        buffer.add(self._recorder.take())
        try:
            while (batch := buffer.pop()) is not None:
                try:
                    await self._send(batch)
                except KeyServiceUnavailable as exc:
                    buffer.put_back(batch)
                    log.warning("usage report not delivered; kept for the next try: %s", exc,
                                extra={"fields": {"pending_keys": buffer.pending_keys}})
                    return False
                except BatchRefused as exc:
                    buffer.drop(batch)
                    log.error("usage report refused by key_service; dropped: %s", exc)
                except asyncio.CancelledError:
                    buffer.put_back(batch)
                    raise
            return True
        finally:
            if self._on_change is not None:
                self._on_change(buffer.pending_keys)

    def start(self) -> None:
        """Report every ``interval`` seconds until ``drain``."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gateway-usage")

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            if self._stop.is_set():
                return
            try:
                await self.flush()
            except Exception:
                # A bug must not end usage reports for the life of the process.
                log.exception("usage report failed")

    async def drain(self, timeout: float) -> None:
        """Stop the loop, then one last flush (within ``timeout``): at shutdown, after the
        requests in flight were answered."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            # A report in flight finishes (or fails) first; the drain's flush comes after it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            async with asyncio.timeout(timeout):
                delivered = await self.flush()
        except TimeoutError:
            delivered = False
        if not delivered:
            log.warning("usage not delivered at shutdown; lost", extra={"fields": {
                "pending_keys": self._buffer.pending_keys,
                "requests": self._buffer.pending_requests,
            }})
