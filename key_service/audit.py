"""Reading the audit log: newest first, keyset-paginated by row ID."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apikeys_shared.events import format_time

from .db import read_session
from .errors import BadRequest
from .models import AuditEntry

__all__ = ["AuditPage", "audit_json", "list_audit"]


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
        "action": entry.action,
        "key_id": entry.key_id,
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
