"""The key database: keys, administrators, management tokens, sessions, audit rows, the outbox.

Neither a key's secret nor a management token is ever stored, only its keyed hash (see
apikeys_shared.hashing).
Timestamps are stored as naive UTC and always come back as aware UTC, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "GIN_PENDING_KB",
    "POSTGRESQL_ONLY",
    "ApiKey",
    "AuditEntry",
    "Base",
    "GatewayProcess",
    "KeyUsageDay",
    "LoginThrottle",
    "ManagementToken",
    "OutboxEvent",
    "Session",
    "UsageBatch",
    "User",
    "schema_objects_for",
    "utcnow",
]

# The trigram index's pending list (kB): new keys wait there for a merge into the index, and
# every search reads all of it, so it is kept short (PostgreSQL's default is 4 MB, ~500 pages).
GIN_PENDING_KB = 128

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and returned as aware UTC on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not accepted; use aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class User(Base):
    """A Backoffice user; only ``system_administrator`` may manage keys."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Session(Base):
    """A browser session. Only a hash of the session ID is stored."""

    __tablename__ = "sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class LoginThrottle(Base):
    """Failed logins in the current window, per username and address, address, or username.

    Kept in the database (not in memory) so that every replica sees the same count.
    """

    __tablename__ = "login_throttle"

    # "pair" (username and address), "address", "user", or "known": a pair that logged in
    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    subject: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """An API key: active until revoked, then revoked for ever.

    A rolled key has a replacement (``replaced_by``) and, while it is still active, the moment
    of its scheduled revocation (``revokes_at``, cleared when it is revoked).
    """

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(400))
    secret_hash: Mapped[str] = mapped_column(String(64))
    hash_version: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(8))  # "active" | "revoked"
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    issued_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    revoked_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    revokes_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    replaces: Mapped[str | None] = mapped_column(String(36), nullable=True)
    replaced_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # The latest request a gateway reported it authenticated; only ever moves forward (usage.py).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        # The list: active keys newest first, then revoked keys, most recently revoked last.
        Index("ix_api_keys_active_list", "status", "issued_at", "key_id"),
        Index("ix_api_keys_revoked_list", "status", "revoked_at", "key_id"),
        # The revocation scheduler's question: which rolled keys are due, soonest first.
        Index("ix_api_keys_revokes_at", "revokes_at"),
        # The list's search (keys.search_filter), on PostgreSQL only: a key ID prefix (a
        # pattern_ops index serves a left-anchored match in any collation) and a name fragment
        # (pg_trgm's trigrams serve ILIKE '%…%'; made only where the extension can be). On
        # SQLite no index serves the search: none can serve "contains", and the prefix's test,
        # ORed with the name's, makes SQLite walk the list index either way (docs/api.md).
        Index("ix_api_keys_key_id_prefix", "key_id",
              postgresql_ops={"key_id": "varchar_pattern_ops"}).ddl_if(dialect="postgresql"),
        Index("ix_api_keys_name_trgm", "name", postgresql_using="gin",
              postgresql_ops={"name": "gin_trgm_ops"},
              postgresql_with={"gin_pending_list_limit": GIN_PENDING_KB},
              ).ddl_if(dialect="postgresql"),
    )


class KeyUsageDay(Base):
    """Requests gateways authenticated with one key on one UTC day (kept 90 days: usage.py)."""

    __tablename__ = "key_usage_days"

    key_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    day: Mapped[date] = mapped_column(Date(), primary_key=True, index=True)
    requests: Mapped[int] = mapped_column(BigInteger)


class UsageBatch(Base):
    """The ID of a usage report taken in, so that the same report sent again counts once."""

    __tablename__ = "usage_batches"

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
# Indexes made on PostgreSQL only (``ddl_if``): schema comparisons on another database leave
# them out (``schema_objects_for``).
POSTGRESQL_ONLY = frozenset({"ix_api_keys_key_id_prefix", "ix_api_keys_name_trgm"})


def schema_objects_for(dialect: str) -> Callable[..., bool]:
    """Alembic's ``include_object`` for a database of ``dialect``: every schema object but the
    indexes another dialect alone has."""

    def include(obj: object, name: str | None, type_: str, reflected: bool,
                compare_to: object) -> bool:
        return not (type_ == "index" and name in POSTGRESQL_ONLY and dialect != "postgresql")

    return include


class ManagementToken(Base):
    """A credential for machines to call the JSON API with a set of scopes, until revoked."""

    __tablename__ = "management_tokens"

    token_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(400))
    scopes: Mapped[str] = mapped_column(String(200))  # space-separated, as in OAuth's "scope"
    secret_hash: Mapped[str] = mapped_column(String(64))
    hash_version: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(8))  # "active" | "revoked"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    revoked_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)


class AuditEntry(Base):
    """One row per change (a key issued, rolled or revoked; a token created or revoked),
    written in the same transaction as the change.

    The actor is a person (``actor_type`` "user", ``actor_id``), a management token ("token",
    ``actor_token_id``; ``actor`` holds its name then) or key_service itself ("system": a
    scheduled revocation). The subject is a key (``key_id``) or a token (``token_id``).
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    actor: Mapped[str] = mapped_column(String(400))
    actor_type: Mapped[str] = mapped_column(String(8), server_default="user")
    actor_token_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # "key.issued" | "key.rolled" | "key.revoked" | "token.created" | "token.revoked"
    action: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    token_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    client_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class OutboxEvent(Base):
    """An event waiting to be (or already) published.

    Written in the key's transaction with ``sequence`` NULL. The sequencer (one at a time, under
    a lock) then gives pending rows consecutive sequence numbers in ``id`` order and signs the
    CloudEvent body, so the feed and the broker see a dense, gap-free, commit-ordered sequence
    even when many transactions commit concurrently. The relay publishes sequenced rows in
    order and sets ``sent_at`` only after the broker's confirm.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    key_id: Mapped[str] = mapped_column(String(36), index=True)
    # "apikey.issued" | "apikey.rolled" | "apikey.revoked"
    event_type: Mapped[str] = mapped_column(String(32))
    record: Mapped[str] = mapped_column(Text)  # KeyRecord.to_json() as JSON text
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sequence: Mapped[int | None] = mapped_column(BigInteger, unique=True, nullable=True)
    body: Mapped[str | None] = mapped_column(Text, nullable=True)  # signed CloudEvent JSON
    signature: Mapped[str | None] = mapped_column(String(128), nullable=True)
    signing_key: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_outbox_unsent", "sent_at", "sequence"),)


class GatewayProcess(Base):
    """A gateway process as its last heartbeat described it (see key_service/heartbeats.py).

    ``applied_sequence`` is the process's watermark: every event up to it is applied there.
    ``seen_at`` is key_service's own clock when the heartbeat arrived, so that gateways' clocks
    do not matter to who counts as live.
    """

    __tablename__ = "gateway_processes"

    instance_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    applied_sequence: Mapped[int] = mapped_column(BigInteger)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
