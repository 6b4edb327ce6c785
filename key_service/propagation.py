"""A revocation's receipt: which gateway processes have applied its event, from their heartbeats.

Pure rules, no I/O (the heartbeats are read by ``heartbeats.py``). Each gateway process reports
its *watermark*: the highest sequence such that it and every event before it have been applied
in that process. A process has confirmed an event when its watermark is at or above the event's
sequence. A process whose last heartbeat is older than the gone bound is *gone*: listed, never
counted, because nothing is known of what it does now. docs/architecture.md ("Revocation
receipts") states the guarantee and its limits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apikeys_shared.events import format_time

__all__ = ["ProcessView", "Propagation", "propagation"]


@dataclass(frozen=True)
class ProcessView:
    """What the last heartbeat of one gateway process said, and when it arrived."""

    instance_id: str
    name: str
    applied_sequence: int
    seen_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The process as a receipt lists it."""
        return {
            "instance_id": self.instance_id,
            "name": self.name,
            "applied_sequence": self.applied_sequence,
            "last_heartbeat": format_time(self.seen_at),
        }


@dataclass(frozen=True)
class Propagation:
    """How far one event has reached: the live processes, and which of them applied it."""

    sequence: int | None
    processes: int
    confirmed: int
    pending: tuple[ProcessView, ...]
    gone: tuple[ProcessView, ...]
    ms: int

    @property
    def complete(self) -> bool:
        """Every live process has applied the event (and its sequence is known)."""
        return self.sequence is not None and not self.pending

    def to_json(self) -> dict[str, Any]:
        """The ``propagation`` object of the API."""
        return {
            "sequence": self.sequence,
            "processes": self.processes,
            "confirmed": self.confirmed,
            "pending": [p.to_json() for p in self.pending],
            "gone": [p.to_json() for p in self.gone],
            "ms": self.ms,
        }


def propagation(
    processes: Iterable[ProcessView], sequence: int | None, *, now: datetime,
    gone_after: float, ms: int,
) -> Propagation:
    """The receipt of the event at ``sequence`` (None: not sequenced yet, so nobody has it).

    Live: a heartbeat within ``gone_after`` seconds of ``now``. Confirmed: live, with a
    watermark at or above ``sequence``. Pending and gone are sorted by name.
    """
    since = now - timedelta(seconds=gone_after)
    live: list[ProcessView] = []
    gone: list[ProcessView] = []
    for process in processes:
        (live if process.seen_at >= since else gone).append(process)
    pending = [
        p for p in live if sequence is None or p.applied_sequence < sequence
    ]
    return Propagation(
        sequence=sequence,
        processes=len(live),
        confirmed=len(live) - len(pending),
        pending=tuple(sorted(pending, key=_order)),
        gone=tuple(sorted(gone, key=_order)),
        ms=ms,
    )


def _order(process: ProcessView) -> tuple[str, str]:
    return process.name, process.instance_id
