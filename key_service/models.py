"""The key database: keys, administrators, sessions, audit rows and the event outbox.

The secret itself is never stored, only its keyed hash (see apikeys_shared.hashing).
Timestamps are stored as naive UTC and always come back as aware UTC, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
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
    "ApiKey",
    "AuditEntry",
    "Base",
    "LoginThrottle",
    "OutboxEvent",
    "Session",
    "User",
    "utcnow",
]

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
    """An API key: active until revoked, then revoked for ever."""

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

    __table_args__ = (
        # The list: active keys newest first, then revoked keys, most recently revoked last.
        Index("ix_api_keys_active_list", "status", "issued_at", "key_id"),
        Index("ix_api_keys_revoked_list", "status", "revoked_at", "key_id"),
    )


class AuditEntry(Base):
    """One row per issue and revoke, written in the same transaction as the change."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))  # "key.issued" | "key.revoked"
    key_id: Mapped[str] = mapped_column(String(36), index=True)
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
    event_type: Mapped[str] = mapped_column(String(32))  # "apikey.issued" | "apikey.revoked"
    record: Mapped[str] = mapped_column(Text)  # KeyRecord.to_json() as JSON text
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sequence: Mapped[int | None] = mapped_column(BigInteger, unique=True, nullable=True)
    body: Mapped[str | None] = mapped_column(Text, nullable=True)  # signed CloudEvent JSON
    signature: Mapped[str | None] = mapped_column(String(128), nullable=True)
    signing_key: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_outbox_unsent", "sent_at", "sequence"),)
