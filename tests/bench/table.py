"""What the key_service and key list benchmarks share: a report row, timed calls, the table."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["Row", "latencies", "print_rows"]


@dataclass(frozen=True)
class Row:
    """One line of the report."""

    backend: str
    what: str
    value: str
    baseline: str
    ratio: str


async def latencies(samples: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    """Milliseconds of ``samples`` sequential calls (after a few warm-up calls)."""
    for _ in range(5):
        await call()
    out: list[float] = []
    for _ in range(samples):
        start = time.perf_counter()
        await call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def print_rows(title: str, details: str, rows: list[Row], aims: str) -> None:
    """The heading line (with the machine and its load), the table, and the aims."""
    headers = ("backend", "measure", "result", "baseline (same run)", "ratio")
    table = [headers, *((r.backend, r.what, r.value, r.baseline, r.ratio) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{title}: Python {platform.python_version()}, {os.cpu_count()} cores, {details}; "
          f"load average at the end {load} (other work on the machine skews every figure)")
    for n, line in enumerate(table):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print(f"aims: {aims}")
