"""The service layer for keys: issue, roll, revoke, get and list.

Issue and revoke each write three rows in one transaction: the key, its audit row and its outbox
row. The outbox row carries only the key record (never the secret); the sequencer later numbers
and signs it. The relay is woken right after the commit, so publishing needs no polling.

Rolling a key issues its replacement and gives the old key a ``revokes_at`` in the same
transaction (two keys, two audit rows, two events: ``apikey.issued`` for the new key, then
``apikey.rolled`` for the old one). When ``revokes_at`` arrives, ``revoke_due`` (called by the
scheduler, see scheduler.py) revokes the old key through the same three rows. Both take the
key's row lock before they look at its state, so concurrent rolls, revocations and schedulers on
any number of replicas change a key exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apikeys_shared.errors import EnvelopeError
from apikeys_shared.events import KeyRecord, event_type_for, format_time, parse_time
from apikeys_shared.hashing import PepperSet
from apikeys_shared.keys import generate_secret, is_valid_key_id, new_key_id

from .audit import SYSTEM_ACTOR, Actor, audit_row
from .db import read_session, write_session
from .errors import BadRequest, Conflict, NotFound
from .metrics import Metrics
from .models import ApiKey, Base, OutboxEvent, utcnow

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_NAME_LENGTH",
    "MAX_OVERLAP_SECONDS",
    "MAX_QUERY_LENGTH",
    "Actor",
    "Clock",
    "IssuedKey",
    "KeyPage",
    "KeyService",
    "RolledKey",
    "active_list_query",
    "key_json",
    "parse_limit",
    "parse_query",
    "revoked_list_query",
    "search_filter",
    "validate_name",
    "validate_overlap",
]

MAX_NAME_LENGTH = 100
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_OVERLAP_SECONDS = 30 * 86400
MAX_QUERY_LENGTH = 100
# What can begin a key ID: lowercase hexadecimal digits and the UUID's hyphens.
_ID_PREFIX = re.compile(r"[0-9a-f-]{1,36}")
# Rolled keys revoked per transaction by revoke_due; it is called again while any are left.
DUE_BATCH = 100

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class IssuedKey:
    """A freshly issued key and its secret: the one moment the secret exists outside a client."""

    key: ApiKey
    secret: str


@dataclass(frozen=True)
class RolledKey:
    """A roll: the replacement with its secret (shown once), and the old key as it is now."""

    key: ApiKey
    secret: str
    replaced: ApiKey


@dataclass(frozen=True)
class KeyPage:
    """One page of the key list and the cursor of the next page (None at the end)."""

    items: list[ApiKey]
    next_cursor: str | None


def validate_name(value: object) -> str:
    """A key name: a string of 1-100 printable characters after trimming; BadRequest otherwise."""
    if not isinstance(value, str):
        raise BadRequest("name must be a string", field="name")
    name = value.strip()
    if not name:
        raise BadRequest("name must not be empty or blank", field="name")
    if len(name) > MAX_NAME_LENGTH:
        raise BadRequest(
            f"name must be at most {MAX_NAME_LENGTH} characters (got {len(name)})", field="name"
        )
    if not name.isprintable():
        raise BadRequest("name must contain printable characters only", field="name")
    return name


def validate_overlap(value: object) -> int:
    """Seconds both keys of a roll stay valid: an integer from 0 to 30 days; BadRequest else."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(
            "overlap_seconds must be an integer number of seconds", field="overlap_seconds"
        )
    if not 0 <= value <= MAX_OVERLAP_SECONDS:
        raise BadRequest(
            f"overlap_seconds must be from 0 to {MAX_OVERLAP_SECONDS} (30 days), got {value}",
            field="overlap_seconds",
        )
    return value


def parse_limit(raw: str | None) -> int:
    """The ``limit`` query parameter: 1 to 500, 50 when absent."""
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest("limit must be an integer", field="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    return limit


def parse_query(raw: str | None) -> str | None:
    """The ``q`` query parameter, trimmed: None when absent or blank; BadRequest when longer
    than 100 characters or holding control characters."""
    if raw is None:
        return None
    text = raw.strip()
    if not text:
        return None
    if len(text) > MAX_QUERY_LENGTH:
        raise BadRequest(
            f"q must be at most {MAX_QUERY_LENGTH} characters (got {len(text)})", field="q"
        )
    if not text.isprintable():
        raise BadRequest("q must contain printable characters only", field="q")
    return text


def _like_escaped(text: str) -> str:
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


def search_filter(q: str, dialect: str) -> ColumnElement[bool]:
    """Keys whose name contains ``q`` (case-insensitive) or whose key ID starts with it.

    The patterns are rendered into the statement (``literal_execute``) rather than sent as
    parameters, so that PostgreSQL plans each search for its own pattern: from its trigram
    statistics it chooses between the trigram and prefix indexes and walking the list index.
    On PostgreSQL, ILIKE folds the case of every letter; on SQLite, of ASCII letters only.
    """
    pattern: BindParameter[str] = bindparam(None, f"%{_like_escaped(q)}%", literal_execute=True)
    by_name = ApiKey.name.ilike(pattern, escape="/")
    prefix = q.lower()
    if not _ID_PREFIX.fullmatch(prefix):
        return by_name
    by_id: ColumnElement[bool]
    if dialect == "postgresql":
        # Left-anchored, so ix_api_keys_key_id_prefix (varchar_pattern_ops) serves it.
        by_id = ApiKey.key_id.like(bindparam(None, f"{prefix}%", literal_execute=True))
    else:
        # A range (SQLite compares text byte by byte, and every character of a key ID sorts
        # below DEL), tested on each key as the list's index is walked: ORed with the name
        # test, which no SQLite index can serve, it cannot use the primary key's index.
        by_id = and_(ApiKey.key_id >= prefix, ApiKey.key_id < prefix + "\x7f")
    return or_(by_name, by_id)


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def key_json(key: ApiKey) -> dict[str, Any]:
    """The public view of a key (no hash, no secret)."""
    return {
        "key_id": key.key_id,
        "name": key.name,
        "status": key.status,
        "issued_at": format_time(key.issued_at),
        "revoked_at": _time(key.revoked_at),
        "revokes_at": _time(key.revokes_at),
        "replaces": key.replaces,
        "replaced_by": key.replaced_by,
        "last_used_at": _time(key.last_used_at),
    }


def _record(key: ApiKey) -> KeyRecord:
    # A revoked key's record says only that (revokes_at is cleared on revocation), so that it
    # keeps the first dataschema every subscriber understands.
    scheduled = key.revokes_at is not None
    return KeyRecord(
        key_id=key.key_id, name=key.name, status="revoked" if key.status == "revoked" else "active",
        issued_at=key.issued_at, revoked_at=key.revoked_at, secret_hash=key.secret_hash,
        hash_version=key.hash_version, revokes_at=key.revokes_at,
        replaced_by=key.replaced_by if scheduled else None,
    )


def _outbox_row(key: ApiKey, at: datetime) -> OutboxEvent:
    # sequence, body, signature and sent_at stay NULL: the sequencer numbers and signs the row.
    record = _record(key)
    return OutboxEvent(
        event_id=str(uuid.uuid4()),
        key_id=key.key_id,
        event_type=event_type_for(record),
        record=json.dumps(record.to_json()),
        created_at=at,
    )


def _table(row: Base) -> Table:
    return cast(Table, row.__table__)


def _values(row: Base) -> dict[str, Any]:
    return {
        column.key: getattr(row, column.key) for column in row.__table__.columns
        if getattr(row, column.key) is not None
    }


async def _insert_together(session: AsyncSession, rows: list[Base]) -> None:
    """Insert ``rows`` in order, inside the session's transaction.

    On PostgreSQL as one statement (data-modifying CTEs), which saves two round trips on the
    hottest path; either way a failing insert undoes the others with the transaction.
    """
    # Core statements on the session's connection. SQLAlchemy does not fill Python-side column
    # defaults into a statement that carries CTEs, so the rows set every value themselves
    # (audit_row and _outbox_row stamp their times).
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        *first, last = rows
        statement = insert(_table(last)).values(**_values(last))
        for index, row in enumerate(first):
            cte = insert(_table(row)).values(**_values(row)).cte(f"w{index}")
            statement = statement.add_cte(cte)
        await conn.execute(statement)
        return
    for row in rows:
        await conn.execute(insert(_table(row)).values(**_values(row)))


# -- cursors ------------------------------------------------------------------------------------
Phase = Literal["a", "r"]


@dataclass(frozen=True)
class _Cursor:
    phase: Phase  # "a": within the active keys; "r": within the revoked keys
    at: datetime | None = None
    key_id: str | None = None

    @property
    def after(self) -> tuple[datetime, str] | None:
        return None if self.at is None or self.key_id is None else (self.at, self.key_id)

    def encode(self) -> str:
        raw = {"p": self.phase, "t": None if self.at is None else format_time(self.at),
               "k": self.key_id}
        return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> _Cursor:
        try:
            raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            phase, at, key_id = raw["p"], raw["t"], raw["k"]
            if phase not in ("a", "r") or (at is None) != (key_id is None):
                raise ValueError("inconsistent cursor")
            if phase == "a" and at is None:
                raise ValueError("active cursor without position")
            if key_id is not None and not is_valid_key_id(key_id):
                raise ValueError("bad key ID")
            moment = None if at is None else parse_time(at)
        except (ValueError, TypeError, KeyError, binascii.Error, EnvelopeError,
                UnicodeDecodeError, RecursionError):
            raise BadRequest("cursor is not a cursor this service issued", field="cursor") from None
        return cls(phase=phase, at=moment, key_id=key_id)


def active_list_query(
    after: tuple[datetime, str] | None, limit: int, match: ColumnElement[bool] | None = None,
) -> Select[ApiKey]:
    """Active keys after ``(issued_at, key_id)``, newest first (walks ix_api_keys_active_list);
    only those ``match`` selects, when given."""
    query = select(ApiKey).where(ApiKey.status == "active")
    if match is not None:
        query = query.where(match)
    if after is not None:
        query = query.where(tuple_(ApiKey.issued_at, ApiKey.key_id) < after)
    return query.order_by(ApiKey.issued_at.desc(), ApiKey.key_id.desc()).limit(limit)


def revoked_list_query(
    after: tuple[datetime, str] | None, limit: int, match: ColumnElement[bool] | None = None,
) -> Select[ApiKey]:
    """Revoked keys after ``(revoked_at, key_id)``, latest last (ix_api_keys_revoked_list);
    only those ``match`` selects, when given."""
    query = select(ApiKey).where(ApiKey.status == "revoked")
    if match is not None:
        query = query.where(match)
    if after is not None:
        query = query.where(tuple_(ApiKey.revoked_at, ApiKey.key_id) > after)
    return query.order_by(ApiKey.revoked_at.asc(), ApiKey.key_id.asc()).limit(limit)


class KeyService:
    """Issue, roll, revoke, get and list keys on one database."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], peppers: PepperSet, *,
        wakeup: asyncio.Event | None = None, metrics: Metrics | None = None,
        scheduler_wakeup: asyncio.Event | None = None, clock: Clock = utcnow,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._peppers = peppers
        self._wakeup = wakeup
        self._metrics = metrics
        self._scheduler_wakeup = scheduler_wakeup
        self._clock = clock

    def _committed(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _new_key(self, name: str, actor: Actor, at: datetime) -> IssuedKey:
        key_id = new_key_id()
        secret = generate_secret()
        secret_hash, version = self._peppers.hash(key_id, secret)
        key = ApiKey(
            key_id=key_id, name=name, secret_hash=secret_hash, hash_version=version,
            status="active", issued_at=at, revoked_at=None, issued_by=actor.user_id,
        )
        return IssuedKey(key=key, secret=secret)

    async def issue(self, name: object, actor: Actor) -> IssuedKey:
        """Create a key named ``name``; the secret is returned here and never again."""
        clean = validate_name(name)
        now = self._clock()
        issued = self._new_key(clean, actor, now)
        key = issued.key
        async with write_session(self._sessionmaker) as session:
            await _insert_together(session, [
                key, audit_row(actor, "key.issued", now, key_id=key.key_id),
                _outbox_row(key, now),
            ])
        self._committed()
        if self._metrics is not None:
            self._metrics.keys_issued.inc()
        return issued

    async def _locked(self, session: AsyncSession, key_id: str) -> ApiKey:
        key = (await session.execute(
            select(ApiKey).where(ApiKey.key_id == key_id).with_for_update()
        )).scalar_one_or_none()
        if key is None:
            raise NotFound(f"no key with ID {key_id}")
        return key

    async def roll(self, key_id: str, overlap_seconds: object, actor: Actor) -> RolledKey:
        """Issue a replacement for an active key and schedule the old key's revocation.

        The replacement has the old key's name and ``replaces`` = its ID; the old key gets
        ``revokes_at`` = now + ``overlap_seconds`` and ``replaced_by``. NotFound for unknown IDs;
        Conflict for a revoked key or one rolled before (a key is rolled once).
        """
        overlap = validate_overlap(overlap_seconds)
        if not is_valid_key_id(key_id):
            raise NotFound("no key with this ID (a key ID is a lowercase UUID)")
        now = self._clock()
        async with write_session(self._sessionmaker) as session:
            old = await self._locked(session, key_id)
            if old.status == "revoked":
                raise Conflict(f"key {key_id} is revoked; only an active key can be rolled")
            if old.replaced_by is not None:
                raise Conflict(
                    f"key {key_id} was already rolled (replaced by {old.replaced_by}); "
                    "a key is rolled once"
                )
            issued = self._new_key(old.name, actor, max(now, old.issued_at))
            new = issued.key
            new.replaces = old.key_id
            old.replaced_by = new.key_id
            old.revokes_at = new.issued_at + timedelta(seconds=overlap)
            # One flush per step: outbox rows get their IDs (and so their order in the feed)
            # in the order they are added: the replacement is announced before the roll.
            for row in (
                new, audit_row(actor, "key.issued", now, key_id=new.key_id),
                audit_row(actor, "key.rolled", now, key_id=old.key_id),
                _outbox_row(new, now), _outbox_row(old, now),
            ):
                session.add(row)
                await session.flush()
        self._committed()
        if self._scheduler_wakeup is not None:
            self._scheduler_wakeup.set()
        if self._metrics is not None:
            self._metrics.keys_issued.inc()
            self._metrics.keys_rolled.inc()
        return RolledKey(key=new, secret=issued.secret, replaced=old)

    async def revoke(self, key_id: str, actor: Actor) -> ApiKey:
        """Revoke a key for ever; NotFound for unknown IDs, Conflict when already revoked.

        A rolled key may be revoked before its ``revokes_at``; the schedule then lapses.
        """
        if not is_valid_key_id(key_id):
            raise NotFound("no key with this ID (a key ID is a lowercase UUID)")
        now = self._clock()
        async with write_session(self._sessionmaker) as session:
            key = await self._locked(session, key_id)
            if key.status == "revoked":
                raise Conflict(f"key {key_id} is already revoked; revocation is permanent")
            key.status = "revoked"
            key.revoked_at = max(now, key.issued_at)
            key.revoked_by = actor.user_id
            key.revokes_at = None
            await session.flush()
            session.add(audit_row(actor, "key.revoked", now, key_id=key_id))
            await session.flush()
            session.add(_outbox_row(key, now))
            await session.flush()
        self._committed()
        if self._metrics is not None:
            self._metrics.keys_revoked.inc()
        return key

    async def revoke_due(self, now: datetime, limit: int = DUE_BATCH) -> Sequence[ApiKey]:
        """Revoke rolled keys whose ``revokes_at`` is at or before ``now``; return them.

        At most ``limit`` per call (call again while it returns that many). Each is revoked as
        of its ``revokes_at`` (the moment it stopped being valid, which a late run does not
        move), with an audit row by key_service itself and a ``key.revoked`` event. Rows another
        transaction holds are skipped (PostgreSQL ``SKIP LOCKED``): that transaction is
        revoking or rolling them, and a key found revoked is never revoked again.
        """
        async with write_session(self._sessionmaker) as session:
            due = list((await session.scalars(
                select(ApiKey)
                .where(ApiKey.revokes_at <= now, ApiKey.status == "active")
                .order_by(ApiKey.revokes_at, ApiKey.key_id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )).all())
            for key in due:
                key.status = "revoked"
                key.revoked_at = key.revokes_at
                key.revokes_at = None
                await session.flush()
                session.add(audit_row(SYSTEM_ACTOR, "key.revoked", now, key_id=key.key_id))
                await session.flush()
                session.add(_outbox_row(key, now))
                await session.flush()
        if due:
            self._committed()
            if self._metrics is not None:
                self._metrics.keys_revoked.inc(len(due))
        return due

    async def next_revocation(self) -> datetime | None:
        """The earliest ``revokes_at`` of an active key, or None when no revocation waits."""
        async with read_session(self._sessionmaker) as session:
            moment: datetime | None = await session.scalar(
                select(func.min(ApiKey.revokes_at)).where(ApiKey.status == "active")
            )
        return moment

    async def get(self, key_id: str) -> ApiKey:
        """One key; NotFound for unknown or malformed IDs."""
        if not is_valid_key_id(key_id):
            raise NotFound("no key with this ID (a key ID is a lowercase UUID)")
        async with read_session(self._sessionmaker) as session:
            key = await session.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"no key with ID {key_id}")
        return key

    async def list(
        self, limit: int = DEFAULT_LIMIT, cursor: str | None = None, q: str | None = None,
    ) -> KeyPage:
        """Active keys newest first, then revoked keys with the latest revoked last; with
        ``q``, only those whose name contains it or whose key ID starts with it.

        Keyset pagination on the two list indexes: every page costs the same, however deep.
        A cursor is a position in the list, so it continues a search given the same ``q``.
        """
        position = None if cursor is None else _Cursor.decode(cursor)
        items: list[ApiKey] = []
        async with read_session(self._sessionmaker) as session:
            match = None if q is None else search_filter(q, session.get_bind().dialect.name)
            if position is None or position.phase == "a":
                after = None if position is None else position.after
                items = list((await session.scalars(
                    active_list_query(after, limit + 1, match))).all())
                if len(items) > limit:
                    last = items[limit - 1]
                    cursor_a = _Cursor("a", last.issued_at, last.key_id).encode()
                    return KeyPage(items[:limit], cursor_a)
                position = None
            remaining = limit - len(items)
            after = None if position is None else position.after
            revoked = list((await session.scalars(
                revoked_list_query(after, remaining + 1, match))).all())
        if len(revoked) <= remaining:
            return KeyPage(items + revoked, None)
        if remaining == 0:
            # The page ended exactly at the last active key; the revoked ones come next.
            return KeyPage(items, _Cursor("r").encode())
        last = revoked[remaining - 1]
        return KeyPage(
            items + revoked[:remaining], _Cursor("r", last.revoked_at, last.key_id).encode()
        )
