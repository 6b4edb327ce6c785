"""Management tokens: credentials for machines (CI, Terraform, scripts) to call the JSON API.

An administrator creates a token with a name and scopes (scopes.py); its text (tokenformat.py)
is shown once, in the response that creates it, and only its keyed hash is stored. A token is
used as ``Authorization: Bearer <token>`` and is valid until revoked. A token cannot create or
revoke tokens: only an administrator's session can (access.py).

Verification mirrors the gateway's for API keys: the format and checksum first (no lookup for a
malformed token), then the row by the token ID embedded in the text, the keyed hash compared in
constant time, and for an unknown ID a hash of the same cost anyway, so that timing does not
tell which token IDs exist. Malformed, unknown, wrong and revoked tokens are one outcome: None.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apikeys_shared.events import format_time
from apikeys_shared.hashing import PepperSet
from apikeys_shared.keys import is_valid_key_id, new_key_id

from .audit import Actor, audit_row
from .db import read_session, write_session
from .errors import BadRequest, Conflict, NotFound
from .keys import Clock, validate_name
from .models import ManagementToken, utcnow
from .scopes import parse_scopes
from .tokenformat import TOKEN_PERSON, mint_token, parse_token

__all__ = [
    "CreatedToken",
    "TokenIdentity",
    "TokenPage",
    "TokenService",
    "token_json",
]


@dataclass(frozen=True)
class CreatedToken:
    """A new token row and its text: the one moment the token exists outside its holder."""

    token: ManagementToken
    text: str


@dataclass(frozen=True)
class TokenIdentity:
    """A verified, active token: what a request authenticated by it may do, and its name."""

    token_id: str
    name: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class TokenPage:
    """One page of tokens, newest first, and the cursor of the next (None at the end)."""

    items: list[ManagementToken]
    next_cursor: str | None


def token_json(token: ManagementToken) -> dict[str, Any]:
    """The public view of a token (no hash, no token text)."""
    return {
        "token_id": token.token_id,
        "name": token.name,
        "scopes": token.scopes.split(),
        "status": token.status,
        "created_at": format_time(token.created_at),
        "revoked_at": None if token.revoked_at is None else format_time(token.revoked_at),
    }


def _encode(token_id: str) -> str:
    return base64.urlsafe_b64encode(f"tokens:{token_id}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        text = ""
    prefix, _, token_id = text.partition(":")
    if prefix != "tokens" or not is_valid_key_id(token_id):
        raise BadRequest("cursor is not a cursor this service issued", field="cursor")
    return token_id


class TokenService:
    """Create, list, revoke and verify management tokens on one database."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], peppers: PepperSet, *,
        clock: Clock = utcnow,
    ) -> None:
        self._sessionmaker = sessionmaker
        # Never the API keys' hash domain: a token hash can verify nothing else, and no other
        # hash can verify a token.
        self._peppers = peppers.for_domain(TOKEN_PERSON)
        self._clock = clock

    async def create(self, name: object, scopes: object, actor: Actor) -> CreatedToken:
        """A new token named ``name`` holding ``scopes``; its text is returned here only."""
        clean = validate_name(name)
        granted = parse_scopes(scopes)
        token_id = new_key_id()
        text = mint_token(token_id)
        secret_hash, version = self._peppers.hash(token_id, text)
        now = self._clock()
        token = ManagementToken(
            token_id=token_id, name=clean, scopes=" ".join(granted), secret_hash=secret_hash,
            hash_version=version, status="active", created_at=now, revoked_at=None,
            created_by=actor.user_id,
        )
        async with write_session(self._sessionmaker) as session:
            session.add(token)
            await session.flush()
            session.add(audit_row(actor, "token.created", now, token_id=token_id))
        return CreatedToken(token=token, text=text)

    async def revoke(self, token_id: str, actor: Actor) -> ManagementToken:
        """Revoke a token for ever; NotFound for unknown IDs, Conflict when already revoked."""
        if not is_valid_key_id(token_id):
            raise NotFound("no token with this ID (a token ID is a lowercase UUID)")
        now = self._clock()
        async with write_session(self._sessionmaker) as session:
            token = (await session.execute(
                select(ManagementToken).where(ManagementToken.token_id == token_id)
                .with_for_update()
            )).scalar_one_or_none()
            if token is None:
                raise NotFound(f"no token with ID {token_id}")
            if token.status == "revoked":
                raise Conflict(f"token {token_id} is already revoked; revocation is permanent")
            token.status = "revoked"
            token.revoked_at = max(now, token.created_at)
            token.revoked_by = actor.user_id
            await session.flush()
            session.add(audit_row(actor, "token.revoked", now, token_id=token_id))
        return token

    async def list(self, limit: int, cursor: str | None = None) -> TokenPage:
        """Tokens newest first (token IDs are UUIDv7, so they sort by creation)."""
        query = select(ManagementToken).order_by(ManagementToken.token_id.desc())
        if cursor is not None:
            query = query.where(ManagementToken.token_id < _decode(cursor))
        async with read_session(self._sessionmaker) as session:
            rows = list((await session.scalars(query.limit(limit + 1))).all())
        if len(rows) > limit:
            return TokenPage(rows[:limit], _encode(rows[limit - 1].token_id))
        return TokenPage(rows, None)

    async def verify(self, text: str) -> TokenIdentity | None:
        """The identity behind a presented token, or None for any token that is not good."""
        token_id = parse_token(text)
        if token_id is None:
            return None
        async with read_session(self._sessionmaker) as session:
            row = (await session.execute(
                select(
                    ManagementToken.name, ManagementToken.scopes, ManagementToken.secret_hash,
                    ManagementToken.hash_version, ManagementToken.status,
                ).where(ManagementToken.token_id == token_id)
            )).first()
        if row is None:
            self._peppers.dummy_verify(text)
            return None
        matches = self._peppers.verify(token_id, text, row.secret_hash, row.hash_version)
        if not matches or row.status != "active":
            return None
        return TokenIdentity(token_id=token_id, name=row.name, scopes=frozenset(row.scopes.split()))

