"""CPU time and resident memory of process trees, read from /proc (Linux).

On a machine shared with other work, requests per second move with the background load; the
CPU time a proxy spends per request moves much less, so the report shows both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["cpu_seconds", "parse_stat", "rss_mib", "tree_pids"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat(text: str) -> tuple[int, float]:
    """``(ppid, utime + stime in seconds)`` from the text of ``/proc/<pid>/stat``."""
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    rest = text[text.rindex(")") + 2:].split()
    ppid = int(rest[1])
    utime, stime = int(rest[11]), int(rest[12])
    return ppid, (utime + stime) / _TICKS


def _all_stats() -> dict[int, tuple[int, float]]:
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    return stats


def tree_pids(roots: Iterable[int], stats: dict[int, tuple[int, float]] | None = None) -> set[int]:
    """``roots`` and all their living descendants."""
    stats = _all_stats() if stats is None else stats
    found = {pid for pid in roots if pid in stats}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _) in stats.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def cpu_seconds(roots: Iterable[int]) -> float:
    """User plus system CPU seconds used so far by the living processes of the trees."""
    stats = _all_stats()
    return sum(stats[pid][1] for pid in tree_pids(roots, stats))


def rss_mib(roots: Iterable[int]) -> dict[int, float]:
    """Resident memory (VmRSS, MiB) of each living process of the trees, by pid."""
    sizes: dict[int, float] = {}
    for pid in tree_pids(roots):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue  # the process ended while we looked
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                sizes[pid] = int(line.split()[1]) / 1024
    return sizes
