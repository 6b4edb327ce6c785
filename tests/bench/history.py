"""A long key history written straight into key_service's database, by key_service's own code.

Keys are made in their final state and each event's outbox row by ``key_service.keys``'s own
row builder (the record of the key as it stood), so the history is what that many issue and
revoke calls would have left; key_service's own sequencer (``outbox.sequence_pending``) then
numbers and signs every row, and they are marked sent, so that no relay publishes them again.
Not through the API: a million calls would take hours here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, update

from apikeys_shared.keys import generate_secret, new_key_id
from key_service.config import KeyServiceConfig
from key_service.db import create_engine, write_connection
from key_service.keys import _outbox_row
from key_service.models import ApiKey, OutboxEvent
from key_service.outbox import sequence_pending

__all__ = ["History", "build_history", "build_keys"]

_BATCH = 5000
_keys = cast(Table, ApiKey.__table__)
_outbox = cast(Table, OutboxEvent.__table__)
_OUTBOX_COLUMNS = ("event_id", "key_id", "event_type", "record", "created_at")


@dataclass(frozen=True)
class History:
    """What was written: events in all, keys revoked, and how long writing it took."""

    events: int
    revoked: int
    seconds: float


def _row(table: Table, obj: Any, columns: tuple[str, ...] | None = None) -> dict[str, object]:
    names = columns or tuple(c.name for c in table.columns)
    return {name: getattr(obj, name) for name in names}


async def build_history(
    config: KeyServiceConfig, *, keys: int, revoked: int,
    progress: Callable[[str], None] = lambda _: None,
) -> History:
    """``keys`` keys issued, the first ``revoked`` of them revoked: ``keys + revoked`` events.

    Every issue comes before every revocation (the outbox's order is the sequence order).
    """
    started = time.perf_counter()
    start = datetime.now(UTC) - timedelta(seconds=2 * keys + 10)
    digest, version = config.secrets.peppers.hash(new_key_id(), "x" * 64)
    issues: list[dict[str, object]] = []
    revocations: list[dict[str, object]] = []
    key_rows: list[dict[str, object]] = []
    for n in range(keys):
        issued = start + timedelta(seconds=n)
        key = _key(new_key_id(), f"history key {n}", digest, version, issued)
        issues.append(_row(_outbox, _outbox_row(key, issued), _OUTBOX_COLUMNS))
        if n < revoked:
            key.status = "revoked"
            key.revoked_at = start + timedelta(seconds=keys + n)
            revocations.append(_row(_outbox, _outbox_row(key, key.revoked_at),
                                    _OUTBOX_COLUMNS))
        key_rows.append(_row(_keys, key))
    sequenced = await _write(config, key_rows, [issues, revocations],
                             lambda: progress(f"rows written after "
                                              f"{time.perf_counter() - started:.0f} s; sequencing"))
    return History(events=sequenced, revoked=revoked, seconds=time.perf_counter() - started)


async def build_keys(config: KeyServiceConfig, *, keys: int) -> list[tuple[str, str]]:
    """``keys`` active keys, each with a secret of its own: their ``(key ID, secret)`` pairs.

    As ``build_history`` writes them: the keys' rows and their ``issued`` events, sequenced,
    signed and marked sent.
    """
    start = datetime.now(UTC) - timedelta(seconds=keys + 10)
    pairs: list[tuple[str, str]] = []
    issues: list[dict[str, object]] = []
    key_rows: list[dict[str, object]] = []
    for n in range(keys):
        key_id, secret = new_key_id(), generate_secret()
        digest, version = config.secrets.peppers.hash(key_id, secret)
        issued = start + timedelta(seconds=n)
        key = _key(key_id, f"bench key {n}", digest, version, issued)
        issues.append(_row(_outbox, _outbox_row(key, issued), _OUTBOX_COLUMNS))
        key_rows.append(_row(_keys, key))
        pairs.append((key_id, secret))
    await _write(config, key_rows, [issues])
    return pairs


def _key(key_id: str, name: str, digest: str, version: str, issued: datetime) -> ApiKey:
    return ApiKey(key_id=key_id, name=name, secret_hash=digest, hash_version=version,
                  status="active", issued_at=issued, revoked_at=None, issued_by=None,
                  revoked_by=None, revokes_at=None, replaces=None, replaced_by=None)


async def _write(config: KeyServiceConfig, key_rows: list[dict[str, object]],
                 events: list[list[dict[str, object]]],
                 written: Callable[[], None] = lambda: None) -> int:
    """Insert the keys' rows, then the outbox rows in order; sequence, sign and mark them sent.

    Returns the events sequenced.
    """
    assert config.secrets.signer is not None
    engine = create_engine(config.database_url)
    try:
        for first in range(0, len(key_rows), _BATCH):
            async with write_connection(engine) as conn:
                await conn.execute(insert(_keys), key_rows[first:first + _BATCH])
        for rows in events:
            for first in range(0, len(rows), _BATCH):
                async with write_connection(engine) as conn:
                    await conn.execute(insert(_outbox), rows[first:first + _BATCH])
        written()
        sequenced = await sequence_pending(
            engine, source=config.event_source, signer=config.secrets.signer)
        # In ranges of IDs: one statement over a million rows outlasts key_service's statement
        # timeout on PostgreSQL.
        async with write_connection(engine) as conn:
            low, high = (await conn.execute(
                select(func.min(_outbox.c.id), func.max(_outbox.c.id))
                .where(_outbox.c.sent_at.is_(None)))).one()
        sent_at = datetime.now(UTC)
        for first in range(low or 0, (high or -1) + 1, _BATCH):
            async with write_connection(engine) as conn:
                await conn.execute(update(_outbox).where(
                    _outbox.c.sent_at.is_(None), _outbox.c.id >= first,
                    _outbox.c.id < first + _BATCH).values(sent_at=sent_at))
    finally:
        await engine.dispose()
    return sequenced
