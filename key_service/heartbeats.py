"""Gateway heartbeats: kept in the database, and waited on for a revocation's receipt.

Each gateway process posts a heartbeat (``POST /internal/v1/gateways/heartbeat``) every few
seconds and soon after it applies an event: its identity and its watermark, the sequence
through which it has applied every event. They are kept in the database (``gateway_processes``)
rather than in one replica's memory, so that every key_service replica answers the same
receipt whichever replica a gateway happens to reach. A replica that receives a heartbeat also
wakes its own waiters at once; waiters poll the table every ``POLL_INTERVAL`` for heartbeats that
other replicas received. Why the database and not Redis: docs/architecture.md ("Revocation
receipts").
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from apikeys_shared.errors import EnvelopeError
from apikeys_shared.events import MAX_SEQUENCE, parse_time

from .db import READ_ONLY, write_connection
from .models import GatewayProcess, utcnow
from .outbox import fetch_feed
from .propagation import ProcessView, Propagation, propagation

__all__ = [
    "FORGET_AFTER",
    "POLL_INTERVAL",
    "RECENT",
    "Heartbeat",
    "HeartbeatError",
    "Heartbeats",
    "last_sequence",
    "parse_heartbeat",
    "valid_instance_id",
]

# Waiters read the table this often, for heartbeats another replica received.
POLL_INTERVAL = 0.1
# A process not heard of for this long is dropped (it is listed as gone until then).
FORGET_AFTER = 3600.0
# A revocation without ``wait`` reuses the processes read this recently: reading them costs
# the call a measurable share of its time, and its receipt confirms nobody anyway.
RECENT = 1.0
_PRUNE_EVERY = 60.0
_INSTANCE_ID = re.compile(r"[0-9a-f]{16,32}")
_MAX_NAME = 200
_MAX_HOST = 255

_table = cast(Table, GatewayProcess.__table__)
Clock = Callable[[], datetime]


class HeartbeatError(ValueError):
    """A heartbeat body that is not the documented shape; ``field`` names the part at fault."""

    def __init__(self, detail: str, field: str) -> None:
        super().__init__(detail)
        self.field = field


@dataclass(frozen=True)
class Heartbeat:
    """One gateway process's report: who it is, and its watermark."""

    instance_id: str
    name: str
    host: str
    pid: int
    started_at: datetime
    applied_sequence: int


def _text(body: dict[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise HeartbeatError(f"{name} must be 1 to {limit} printable characters", name)
    return value


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HeartbeatError(f"{name} must be an integer from {low} to {high}", name)
    return value


def parse_heartbeat(body: object) -> Heartbeat:
    """A heartbeat from its JSON body; HeartbeatError names what is wrong."""
    if not isinstance(body, dict):
        raise HeartbeatError("the body must be a JSON object", "body")
    instance_id = body.get("instance_id")
    if not isinstance(instance_id, str) or not _INSTANCE_ID.fullmatch(instance_id):
        raise HeartbeatError("instance_id must be 16 to 32 lowercase hex digits", "instance_id")
    started = body.get("started_at")
    try:
        started_at = parse_time(started) if isinstance(started, str) else None
    except EnvelopeError:
        started_at = None
    if started_at is None:
        raise HeartbeatError("started_at must be an RFC 3339 time in UTC", "started_at")
    return Heartbeat(
        instance_id=instance_id,
        name=_text(body, "name", _MAX_NAME),
        host=_text(body, "host", _MAX_HOST),
        pid=_integer(body, "pid", 1, 2**31 - 1),
        started_at=started_at,
        applied_sequence=_integer(body, "applied_sequence", 0, MAX_SEQUENCE),
    )


class Heartbeats:
    """The heartbeats of one key_service replica's view: record them, and wait on them."""

    def __init__(self, *, gone_after: float, clock: Clock = utcnow) -> None:
        self.gone_after = gone_after
        self._clock = clock
        self._arrived = asyncio.Event()
        self._pruned_at = 0.0
        self._known: tuple[float, list[ProcessView]] | None = None

    async def record(self, engine: AsyncEngine, beat: Heartbeat) -> None:
        """Keep ``beat`` as its process's latest (a watermark never goes back), wake waiters."""
        now = self._clock()
        values = {
            "instance_id": beat.instance_id, "name": beat.name, "host": beat.host,
            "pid": beat.pid, "started_at": beat.started_at,
            "applied_sequence": beat.applied_sequence, "seen_at": now,
        }
        async with write_connection(engine) as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            insert = dialect.insert(_table).values(**values)
            # Two heartbeats of one process may reach two replicas out of order.
            highest = case(
                (insert.excluded.applied_sequence > _table.c.applied_sequence,
                 insert.excluded.applied_sequence),
                else_=_table.c.applied_sequence,
            )
            await conn.execute(insert.on_conflict_do_update(
                index_elements=[_table.c.instance_id],
                set_={"name": beat.name, "host": beat.host, "pid": beat.pid,
                      "started_at": beat.started_at, "applied_sequence": highest,
                      "seen_at": now},
            ))
            if time.monotonic() - self._pruned_at >= _PRUNE_EVERY:
                self._pruned_at = time.monotonic()
                await conn.execute(delete(_table).where(
                    _table.c.seen_at < now - timedelta(seconds=FORGET_AFTER)
                ))
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    async def forget(self, engine: AsyncEngine, instance_id: str) -> bool:
        """A process stopped cleanly: drop it (it is neither live nor gone); True if known."""
        async with write_connection(engine) as conn:
            result = await conn.execute(
                delete(_table).where(_table.c.instance_id == instance_id)
            )
        self._known = None
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()  # a wait may have been waiting on it alone
        return bool(result.rowcount)

    async def processes(self, engine: AsyncEngine) -> list[ProcessView]:
        """Every process heard of within ``FORGET_AFTER``."""
        since = self._clock() - timedelta(seconds=FORGET_AFTER)
        async with engine.connect() as conn:
            conn = await conn.execution_options(**{READ_ONLY: True})
            rows = (await conn.execute(
                select(_table.c.instance_id, _table.c.name, _table.c.applied_sequence,
                       _table.c.seen_at)
                .where(_table.c.seen_at >= since)
            )).all()
        found = [
            ProcessView(
                instance_id=row.instance_id, name=row.name,
                applied_sequence=row.applied_sequence, seen_at=row.seen_at,
            )
            for row in rows
        ]
        self._known = (time.monotonic(), found)
        return found

    async def recent(self, engine: AsyncEngine) -> list[ProcessView]:
        """The processes as read within ``RECENT`` seconds, or read now."""
        known = self._known
        if known is not None and time.monotonic() - known[0] < RECENT:
            return known[1]
        return await self.processes(engine)

    def receipt_of(self, processes: list[ProcessView], sequence: int | None, *,
                   started: float) -> Propagation:
        """The receipt that ``processes`` (as read) give the event at ``sequence``, now."""
        return propagation(
            processes, sequence, now=self._clock(), gone_after=self.gone_after,
            ms=round((time.monotonic() - started) * 1000),
        )

    async def receipt(
        self, engine: AsyncEngine, sequence: int | None, *, started: float,
        wait: float | None = None,
    ) -> Propagation:
        """The receipt of the event at ``sequence``, now or once complete (up to ``wait`` s).

        ``started`` is the ``time.monotonic()`` from which ``ms`` counts.
        """
        deadline = None if wait is None else started + wait
        while True:
            arrived = self._arrived
            found = self.receipt_of(await self.processes(engine), sequence, started=started)
            left = 0.0 if deadline is None else deadline - time.monotonic()
            if found.complete or left <= 0:
                return found
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), min(POLL_INTERVAL, left))


def valid_instance_id(value: str) -> bool:
    """Whether ``value`` is shaped like a gateway process's instance ID."""
    return _INSTANCE_ID.fullmatch(value) is not None


async def last_sequence(engine: AsyncEngine) -> int:
    """The highest sequence assigned so far (0 when none): what a heartbeat is answered."""
    return (await fetch_feed(engine, MAX_SEQUENCE, 1)).last_sequence
