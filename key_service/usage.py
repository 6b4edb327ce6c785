"""Key usage as gateways report it: each key's last use, and its requests per UTC day.

Every gateway process notes the keys it authenticated and reports them in batches
(``POST /internal/v1/usage``, see internal.py; the gateway's side is auth_gateway/usage.py).
What is kept, and why (docs/operations.md, "Key usage"):

* ``api_keys.last_used_at`` is the latest use any gateway reported: it only ever moves forward,
  whatever order reports from several processes arrive in, and is capped at key_service's own
  clock, so that a gateway whose clock runs ahead cannot pin it in the future.
* ``key_usage_days`` adds up the requests per key and UTC day, over every gateway process, for
  ``RETENTION_DAYS``; older days are pruned (``usage_pruner_ctx``), and a report about a day
  already past that window adds nothing to the counts.
* ``usage_batches`` holds the ID of every report taken in for ``BATCH_ID_DAYS``: a report sent
  again (the gateway's first try timed out after it arrived) is recognised and counts once.
  Only a report sent again more than that many days after its first delivery would count twice.

Keys the database does not know (a report about a key ID from another installation, say) are
passed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from aiohttp import web
from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apikeys_shared.errors import EnvelopeError
from apikeys_shared.events import format_time, parse_time
from apikeys_shared.keys import is_valid_key_id

from .appkeys import SESSIONMAKER
from .background import finish
from .db import read_session, write_session
from .errors import BadRequest, NotFound
from .keys import Clock
from .models import ApiKey, KeyUsageDay, UsageBatch, UTCDateTime, utcnow

__all__ = [
    "BATCH_ID_DAYS",
    "MAX_REPORT_KEYS",
    "RETENTION_DAYS",
    "KeyUsage",
    "ReportOutcome",
    "UsageReport",
    "UsageService",
    "parse_report",
    "usage_json",
    "usage_pruner_ctx",
]

log = logging.getLogger(__name__)

RETENTION_DAYS = 90
BATCH_ID_DAYS = 7
# As many as fit the API's body limit (middleware.API_BODY_LIMIT); a gateway sends as many.
MAX_REPORT_KEYS = 100
_MAX_COUNT = 10**12
PRUNE_INTERVAL = 3600.0
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


@dataclass(frozen=True)
class UsageReport:
    """One gateway process's report: per key, its last use and requests on ``day``."""

    batch_id: str
    day: date
    keys: dict[str, tuple[datetime, int]]


@dataclass(frozen=True)
class ReportOutcome:
    """What a report changed: False for a report taken in before; keys the database lacks."""

    accepted: bool
    unknown_keys: int


@dataclass(frozen=True)
class KeyUsage:
    """One key's last use and its requests per UTC day, oldest day first."""

    key_id: str
    last_used_at: datetime | None
    days: list[tuple[date, int]]


def _field(body: dict[str, object], name: str) -> object:
    if name not in body:
        raise BadRequest(f"{name} is required", field=name)
    return body[name]


def parse_report(body: dict[str, object]) -> UsageReport:
    """A report from its JSON body; BadRequest naming the first thing wrong."""
    batch_id = _field(body, "batch_id")
    if not isinstance(batch_id, str) or not _BATCH_ID.fullmatch(batch_id):
        raise BadRequest("batch_id must be 8 to 64 letters, digits, '-' or '_'",
                         field="batch_id")
    raw_day = _field(body, "day")
    try:
        if not isinstance(raw_day, str) or len(raw_day) != 10:
            raise ValueError
        day = date.fromisoformat(raw_day)
    except ValueError:
        raise BadRequest("day must be a date, YYYY-MM-DD", field="day") from None
    items = _field(body, "keys")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_REPORT_KEYS:
        raise BadRequest(f"keys must be a list of 1 to {MAX_REPORT_KEYS} entries", field="keys")
    keys: dict[str, tuple[datetime, int]] = {}
    for index, item in enumerate(items):
        where = f"keys[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object", field="keys")
        key_id, count = item.get("key_id"), item.get("count")
        if not isinstance(key_id, str) or not is_valid_key_id(key_id):
            raise BadRequest(f"{where}.key_id must be a key ID (a lowercase UUID)", field="keys")
        if key_id in keys:
            raise BadRequest(f"{where}.key_id {key_id} appears twice", field="keys")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_COUNT:
            raise BadRequest(f"{where}.count must be a positive integer", field="keys")
        try:
            last = parse_time(item.get("last_used_at"), f"{where}.last_used_at")
        except EnvelopeError as exc:
            raise BadRequest(str(exc), field="keys") from None
        if last.date() != day:
            raise BadRequest(f"{where}.last_used_at is not on {day.isoformat()}", field="keys")
        keys[key_id] = (last, count)
    return UsageReport(batch_id=batch_id, day=day, keys=keys)


def usage_json(usage: KeyUsage) -> dict[str, object]:
    """``GET /api/v1/keys/{key_id}/usage``'s body."""
    return {
        "key_id": usage.key_id,
        "last_used_at": None if usage.last_used_at is None else format_time(usage.last_used_at),
        "retention_days": RETENTION_DAYS,
        "days": [{"day": day.isoformat(), "requests": n} for day, n in usage.days],
    }


def _upsert(dialect: str) -> postgresql.Insert | sqlite.Insert:
    statement = (postgresql.insert(KeyUsageDay) if dialect == "postgresql"
                 else sqlite.insert(KeyUsageDay))
    return statement.on_conflict_do_update(
        index_elements=["key_id", "day"],
        set_={"requests": KeyUsageDay.requests + statement.excluded.requests},
    )


def _batch_insert(dialect: str) -> postgresql.Insert | sqlite.Insert:
    statement = (postgresql.insert(UsageBatch) if dialect == "postgresql"
                 else sqlite.insert(UsageBatch))
    return statement.on_conflict_do_nothing(index_elements=["batch_id"])


# Moves last_used_at forward only: two reports in any order leave the later time.
_USED_AT = bindparam("t", type_=UTCDateTime())
_LAST_USED = (
    update(ApiKey)
    .where(ApiKey.key_id == bindparam("k"))
    .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < _USED_AT))
    .values(last_used_at=_USED_AT)
)


class UsageService:
    """Takes in usage reports, answers a key's usage, prunes what is past keeping."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *,
                 clock: Clock = utcnow) -> None:
        self._sessionmaker = sessionmaker
        self._clock = clock

    async def record(self, report: UsageReport) -> ReportOutcome:
        """Add one report, in one transaction; a report taken in before changes nothing."""
        now = self._clock()
        async with write_session(self._sessionmaker) as session:
            conn = await session.connection()
            dialect = conn.dialect.name
            taken = await conn.execute(
                _batch_insert(dialect).values(batch_id=report.batch_id, received_at=now))
            if taken.rowcount == 0:
                return ReportOutcome(accepted=False, unknown_keys=0)
            # Sorted: concurrent reports lock the key rows in one order (no deadlock).
            wanted = sorted(report.keys)
            known = set((await conn.execute(
                select(ApiKey.key_id).where(ApiKey.key_id.in_(wanted)))).scalars())
            present = [key_id for key_id in wanted if key_id in known]
            if present:
                await conn.execute(_LAST_USED, [
                    {"k": key_id, "t": min(report.keys[key_id][0], now)} for key_id in present
                ])
                if report.day >= self._oldest_day(now):
                    await conn.execute(_upsert(dialect), [
                        {"key_id": key_id, "day": report.day, "requests": report.keys[key_id][1]}
                        for key_id in present
                    ])
        return ReportOutcome(accepted=True, unknown_keys=len(wanted) - len(present))

    @staticmethod
    def _oldest_day(now: datetime) -> date:
        return now.date() - timedelta(days=RETENTION_DAYS - 1)

    async def usage(self, key_id: str) -> KeyUsage:
        """A key's last use and daily requests within the retention; NotFound for unknown IDs."""
        if not is_valid_key_id(key_id):
            raise NotFound("no key with this ID (a key ID is a lowercase UUID)")
        oldest = self._oldest_day(self._clock())
        async with read_session(self._sessionmaker) as session:
            last_used = (await session.execute(
                select(ApiKey.last_used_at).where(ApiKey.key_id == key_id))).one_or_none()
            if last_used is None:
                raise NotFound(f"no key with ID {key_id}")
            rows = (await session.execute(
                select(KeyUsageDay.day, KeyUsageDay.requests)
                .where(KeyUsageDay.key_id == key_id, KeyUsageDay.day >= oldest)
                .order_by(KeyUsageDay.day))).all()
        return KeyUsage(key_id=key_id, last_used_at=last_used[0],
                        days=[(day, requests) for day, requests in rows])

    async def prune(self) -> tuple[int, int]:
        """Forget daily counts past the retention and report IDs past theirs; how many of each."""
        now = self._clock()
        async with write_session(self._sessionmaker) as session:
            days = await session.execute(
                delete(KeyUsageDay).where(KeyUsageDay.day < self._oldest_day(now)))
            batches = await session.execute(delete(UsageBatch).where(
                UsageBatch.received_at < now - timedelta(days=BATCH_ID_DAYS)))
        return days.rowcount, batches.rowcount  # type: ignore[attr-defined]


async def _prune_loop(service: UsageService, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            days, batches = await service.prune()
            if days or batches:
                log.info("usage pruned: %d daily count(s), %d report ID(s)", days, batches)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("usage pruning: database unavailable (%s); trying again later",
                        type(exc).__name__)
        except Exception:
            log.exception("usage pruning: unexpected error; trying again later")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PRUNE_INTERVAL)


async def usage_pruner_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context that prunes old usage at start and every hour."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        _prune_loop(UsageService(app[SESSIONMAKER]), stop), name="key_service usage pruner")
    try:
        yield
    finally:
        stop.set()
        await finish(task, 10.0)
