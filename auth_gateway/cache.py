"""A bounded, in-process LRU map whose entries also expire (the gateway's L1).

The TTL is a safety net only: events evict entries as soon as a key changes. It bounds how
stale an entry can be when an event was missed without anyone knowing, so it counts from the
later of two moments: when the entry was stored, and the last moment its owner *vouches* that
nothing was missed (for the key store, the last moment the process knew it had applied every
key event: ``Freshness.current_as_of``). A process that stays current therefore keeps its
entries for as long as they are used, and one that falls behind loses them ``ttl`` seconds
after it last knew itself current. The bound keeps a flood of distinct key IDs from growing the
process without limit.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["TTLCache"]

V = TypeVar("V")


def _never() -> float | None:
    return None


class TTLCache(Generic[V]):
    """LRU map of at most ``size`` entries, each living ``ttl`` seconds past what vouches for it.

    ``vouched`` gives the latest moment (on ``clock``) as of which every entry is known right,
    or None (then an entry lives ``ttl`` seconds from when it was stored).
    """

    def __init__(
        self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic,
        vouched: Callable[[], float | None] = _never,
    ) -> None:
        self._size = size
        self._ttl = ttl
        self._clock = clock
        self.vouched = vouched
        # key -> (expires, value, hard end): an entry never lives past its hard end.
        self._data: OrderedDict[str, tuple[float, V, float]] = OrderedDict()

    def get(self, key: str) -> V | None:
        """The live value for ``key`` (refreshing its recency), or None."""
        item = self._data.get(key)
        if item is None:
            return None
        if self._clock() >= item[0] and not self._renewed(key, item):
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return item[1]

    def _renewed(self, key: str, item: tuple[float, V, float]) -> bool:
        """Give an expired entry ``ttl`` seconds from the last moment vouched for, if that is
        still ahead (and its hard end too)."""
        as_of = self.vouched()
        if as_of is None:
            return False
        expires = min(as_of + self._ttl, item[2])
        if self._clock() >= expires:
            return False
        self._data[key] = (expires, item[1], item[2])
        return True

    def put(self, key: str, value: V, *, ends: float | None = None) -> None:
        """Store ``value``, never past ``ends`` (on the clock); the least recently used entry
        goes when the map is full."""
        if self._size <= 0 or self._ttl <= 0:
            return
        end = math.inf if ends is None else ends
        self._data[key] = (min(self._clock() + self._ttl, end), value, end)
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
