"""The service layer for keys: issue, revoke, get and list.

Issue and revoke each write three rows in one transaction: the key, its audit row and its outbox
row. The outbox row carries only the key record (never the secret); the sequencer later numbers
and signs it. The relay is woken right after the commit, so publishing needs no polling.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import Select, Table, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apikeys_shared.errors import EnvelopeError
from apikeys_shared.events import KeyRecord, format_time, parse_time
from apikeys_shared.hashing import PepperSet
from apikeys_shared.keys import generate_secret, is_valid_key_id, new_key_id

from .db import read_session, write_session
from .errors import BadRequest, Conflict, NotFound
from .metrics import Metrics
from .models import ApiKey, AuditEntry, Base, OutboxEvent, utcnow

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_NAME_LENGTH",
    "Actor",
    "IssuedKey",
    "KeyPage",
    "KeyService",
    "active_list_query",
    "key_json",
    "parse_limit",
    "revoked_list_query",
    "validate_name",
]

MAX_NAME_LENGTH = 100
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True)
class Actor:
    """Who asks for a change, and from where: what the audit row records."""

    user_id: int | None
    username: str
    client_address: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class IssuedKey:
    """A freshly issued key and its secret: the one moment the secret exists outside a client."""

    key: ApiKey
    secret: str


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


def key_json(key: ApiKey) -> dict[str, Any]:
    """The public view of a key (no hash, no secret)."""
    return {
        "key_id": key.key_id,
        "name": key.name,
        "status": key.status,
        "issued_at": format_time(key.issued_at),
        "revoked_at": None if key.revoked_at is None else format_time(key.revoked_at),
    }


def _record(key: ApiKey) -> KeyRecord:
    return KeyRecord(
        key_id=key.key_id, name=key.name, status="revoked" if key.status == "revoked" else "active",
        issued_at=key.issued_at, revoked_at=key.revoked_at, secret_hash=key.secret_hash,
        hash_version=key.hash_version,
    )


def _outbox_row(key: ApiKey) -> OutboxEvent:
    # sequence, body, signature and sent_at stay NULL: the sequencer numbers and signs the row.
    return OutboxEvent(
        event_id=str(uuid.uuid4()),
        key_id=key.key_id,
        event_type="apikey.revoked" if key.status == "revoked" else "apikey.issued",
        record=json.dumps(_record(key).to_json()),
        created_at=utcnow(),
    )


def _audit_row(actor: Actor, action: str, key_id: str) -> AuditEntry:
    return AuditEntry(
        at=utcnow(), actor_id=actor.user_id, actor=actor.username[:64], action=action,
        key_id=key_id,
        client_address=None if actor.client_address is None else actor.client_address[:64],
        request_id=actor.request_id,
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
    # (_audit_row and _outbox_row stamp their times).
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


def active_list_query(after: tuple[datetime, str] | None, limit: int) -> Select[ApiKey]:
    """Active keys after ``(issued_at, key_id)``, newest first (walks ix_api_keys_active_list)."""
    query = select(ApiKey).where(ApiKey.status == "active")
    if after is not None:
        query = query.where(tuple_(ApiKey.issued_at, ApiKey.key_id) < after)
    return query.order_by(ApiKey.issued_at.desc(), ApiKey.key_id.desc()).limit(limit)


def revoked_list_query(after: tuple[datetime, str] | None, limit: int) -> Select[ApiKey]:
    """Revoked keys after ``(revoked_at, key_id)``, latest last (ix_api_keys_revoked_list)."""
    query = select(ApiKey).where(ApiKey.status == "revoked")
    if after is not None:
        query = query.where(tuple_(ApiKey.revoked_at, ApiKey.key_id) > after)
    return query.order_by(ApiKey.revoked_at.asc(), ApiKey.key_id.asc()).limit(limit)


class KeyService:
    """Issue, revoke, get and list keys on one database."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], peppers: PepperSet, *,
        wakeup: asyncio.Event | None = None, metrics: Metrics | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._peppers = peppers
        self._wakeup = wakeup
        self._metrics = metrics

    def _committed(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def issue(self, name: object, actor: Actor) -> IssuedKey:
        """Create a key named ``name``; the secret is returned here and never again."""
        clean = validate_name(name)
        key_id = new_key_id()
        secret = generate_secret()
        secret_hash, version = self._peppers.hash(key_id, secret)
        key = ApiKey(
            key_id=key_id, name=clean, secret_hash=secret_hash, hash_version=version,
            status="active", issued_at=utcnow(), revoked_at=None, issued_by=actor.user_id,
        )
        async with write_session(self._sessionmaker) as session:
            await _insert_together(
                session, [key, _audit_row(actor, "key.issued", key_id), _outbox_row(key)]
            )
        self._committed()
        if self._metrics is not None:
            self._metrics.keys_issued.inc()
        return IssuedKey(key=key, secret=secret)

    async def revoke(self, key_id: str, actor: Actor) -> ApiKey:
        """Revoke a key for ever; NotFound for unknown IDs, Conflict when already revoked."""
        if not is_valid_key_id(key_id):
            raise NotFound("no key with this ID (a key ID is a lowercase UUID)")
        async with write_session(self._sessionmaker) as session:
            key = (await session.execute(
                select(ApiKey).where(ApiKey.key_id == key_id).with_for_update()
            )).scalar_one_or_none()
            if key is None:
                raise NotFound(f"no key with ID {key_id}")
            if key.status == "revoked":
                raise Conflict(f"key {key_id} is already revoked; revocation is permanent")
            key.status = "revoked"
            key.revoked_at = max(utcnow(), key.issued_at)
            key.revoked_by = actor.user_id
            await session.flush()
            session.add(_audit_row(actor, "key.revoked", key_id))
            await session.flush()
            session.add(_outbox_row(key))
            await session.flush()
        self._committed()
        if self._metrics is not None:
            self._metrics.keys_revoked.inc()
        return key

    async def get(self, key_id: str) -> ApiKey:
        """One key; NotFound for unknown or malformed IDs."""
        if not is_valid_key_id(key_id):
            raise NotFound("no key with this ID (a key ID is a lowercase UUID)")
        async with read_session(self._sessionmaker) as session:
            key = await session.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"no key with ID {key_id}")
        return key

    async def list(self, limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> KeyPage:
        """Active keys newest first, then revoked keys with the latest revoked last.

        Keyset pagination on the two list indexes: every page costs the same, however deep.
        """
        position = None if cursor is None else _Cursor.decode(cursor)
        items: list[ApiKey] = []
        async with read_session(self._sessionmaker) as session:
            if position is None or position.phase == "a":
                after = None if position is None else position.after
                items = list((await session.scalars(active_list_query(after, limit + 1))).all())
                if len(items) > limit:
                    last = items[limit - 1]
                    cursor_a = _Cursor("a", last.issued_at, last.key_id).encode()
                    return KeyPage(items[:limit], cursor_a)
                position = None
            remaining = limit - len(items)
            after = None if position is None else position.after
            revoked = list((await session.scalars(revoked_list_query(after, remaining + 1))).all())
        if len(revoked) <= remaining:
            return KeyPage(items + revoked, None)
        if remaining == 0:
            # The page ended exactly at the last active key; the revoked ones come next.
            return KeyPage(items, _Cursor("r").encode())
        last = revoked[remaining - 1]
        return KeyPage(
            items + revoked[:remaining], _Cursor("r", last.revoked_at, last.key_id).encode()
        )
