"""A bounded, in-process LRU map whose entries also expire (the gateway's L1).

The TTL is a safety net only: events evict entries as soon as a key changes. The bound keeps a
flood of distinct key IDs from growing the process without limit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["TTLCache"]

V = TypeVar("V")


class TTLCache(Generic[V]):
    """LRU map of at most ``size`` entries, each living at most ``ttl`` seconds."""

    def __init__(
        self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._size = size
        self._ttl = ttl
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str) -> V | None:
        """The live value for ``key`` (refreshing its recency), or None."""
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if self._clock() >= expires:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: str, value: V, *, ends: float | None = None) -> None:
        """Store ``value``, until ``ends`` (on the clock) when that comes before the TTL; the
        least recently used entry goes when the map is full."""
        if self._size <= 0 or self._ttl <= 0:
            return
        expires = self._clock() + self._ttl
        self._data[key] = (expires if ends is None or ends > expires else ends, value)
        self._data.move_to_end(key)
        while len(self._data) > self._size:
            self._data.popitem(last=False)

    def pop(self, key: str) -> None:
        """Forget ``key`` if present."""
        self._data.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None
