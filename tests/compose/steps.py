"""The compose test's account of itself: each step, when it began and how long it took.

The lines are written as they happen, past pytest's output capture, so that a passing run shows
what it did and where its minutes went (the test takes several).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

__all__ = ["Steps"]


class Steps:
    """Timed steps, each reported on one line as ``[ elapsed] what (duration)``."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._started = time.monotonic()
        self.durations: list[tuple[str, float]] = []

    def note(self, text: str) -> None:
        """A line of its own, stamped with the time since the start."""
        self._write(f"compose [{time.monotonic() - self._started:6.1f} s] {text}")

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Time the block as the step ``what``; report it when it ends (and if it fails)."""
        began = time.monotonic()
        try:
            yield
        except BaseException:
            self.note(f"FAILED: {what} (after {time.monotonic() - began:.1f} s)")
            raise
        took = time.monotonic() - began
        self.durations.append((what, took))
        self.note(f"{what} ({took:.1f} s)")

    def total(self) -> float:
        """Seconds since the first step began."""
        return time.monotonic() - self._started
