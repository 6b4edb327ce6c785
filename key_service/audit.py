"""The audit log: who changed what, and reading it back newest first.

Every change writes its audit row in the change's own transaction (the service layers call
``audit_row``), so the log can neither miss a change nor record one that did not happen. The
actor is whoever asked: a person's session, a management token (by its ID and name, never its
secret), or key_service itself for a scheduled revocation.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apikeys_shared.events import format_time

from .db import read_session
from .errors import BadRequest
from .models import AuditEntry

__all__ = [
    "ACTIONS",
    "SYSTEM_ACTOR",
    "Actor",
    "ActorType",
    "AuditPage",
    "audit_json",
    "audit_row",
    "list_audit",
]

ActorType = Literal["user", "token", "system"]
ACTIONS = ("key.issued", "key.rolled", "key.revoked", "token.created", "token.revoked")
_NAME_LIMIT = 400  # the width of audit_log.actor


@dataclass(frozen=True)
class Actor:
    """Who asks for a change, and from where: what the audit row records.

    ``username`` is the name the log shows: a person's username, a token's name, or
    ``key_service`` for the service itself.
    """

    user_id: int | None
    username: str
    client_address: str | None = None
    request_id: str | None = None
    token_id: str | None = None
    kind: ActorType = "user"


SYSTEM_ACTOR = Actor(user_id=None, username="key_service", kind="system")


def audit_row(
    actor: Actor, action: str, at: datetime, *, key_id: str | None = None,
    token_id: str | None = None,
) -> AuditEntry:
    """The row recording ``action`` on a key or a token, by ``actor``, at ``at``."""
    address = actor.client_address
    return AuditEntry(
        at=at, actor_id=actor.user_id, actor=actor.username[:_NAME_LIMIT],
        actor_type=actor.kind, actor_token_id=actor.token_id, action=action, key_id=key_id,
        token_id=token_id, client_address=None if address is None else address[:64],
        request_id=actor.request_id,
    )


@dataclass(frozen=True)
class AuditPage:
    """One page of audit rows and the cursor of the next (None at the end)."""

    items: list[AuditEntry]
    next_cursor: str | None


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    """The public view of an audit row."""
    return {
        "id": entry.id,
        "at": format_time(entry.at),
        "actor": entry.actor,
        "actor_type": entry.actor_type,
        "actor_token_id": entry.actor_token_id,
        "action": entry.action,
        "key_id": entry.key_id,
        "token_id": entry.token_id,
        "client_address": entry.client_address,
        "request_id": entry.request_id,
    }


def _encode(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"audit:{entry_id}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        prefix, _, number = text.partition(":")
        if prefix != "audit" or not number.isdigit() or len(number) > 18:
            raise ValueError("not an audit cursor")
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("cursor is not a cursor this service issued", field="cursor") from None


async def list_audit(
    sessionmaker: async_sessionmaker[AsyncSession], limit: int, cursor: str | None = None,
) -> AuditPage:
    """Audit rows, newest first."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    if cursor is not None:
        query = query.where(AuditEntry.id < _decode(cursor))
    async with read_session(sessionmaker) as session:
        rows = list((await session.scalars(query.limit(limit + 1))).all())
    if len(rows) > limit:
        return AuditPage(rows[:limit], _encode(rows[limit - 1].id))
    return AuditPage(rows, None)
