"""A token bucket: at most ``rate`` of something per second, in bursts of at most ``burst``.

The key store spends it on lookups of key IDs its process does not know to exist
(``keystore``): a key issued a moment ago, whose event has not arrived yet, still works at once,
while a flood of made-up IDs costs key_service at most ``rate`` lookups a second per process,
however many client addresses it comes from.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Budget"]


class Budget:
    """``take()`` is True at most ``rate`` times a second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = max(burst if burst is not None else rate, 1.0 if rate > 0 else 0.0)
        self._clock = clock
        self._tokens = self._burst
        self._at = clock()

    def take(self) -> bool:
        """Spend one unit if there is one."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
