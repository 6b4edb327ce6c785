"""Backoffice users: roles, argon2id password hashes, and creating users.

Password checks cost 64 MiB and ~70 ms each (argon2id, libsodium's interactive limits), so they run
in a thread under a semaphore: a login storm queues instead of exhausting memory or the loop.
"""

from __future__ import annotations

import asyncio
import re

import nacl.exceptions
import nacl.pwhash
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .db import read_session, write_session
from .errors import UserError
from .models import User
from .roles import ADMIN_ROLE, MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, ROLES, VIEWER_ROLE

__all__ = [
    "ADMIN_ROLE",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "VIEWER_ROLE",
    "PasswordChecker",
    "create_user",
    "hash_password",
    "validate_username",
]

# The hash of a random password nobody knows, with the parameters hash_password uses: checked
# against for unknown usernames, so that they cost what a real check costs.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=2,p=1$FXQuV+NXU10bMoan2+LF0A$uyCxsgXwhmDjO/4aq9PezZcXsPV4vPLSkZCvBM+wvao"
)
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def validate_username(username: str) -> str:
    """1-64 characters of letters, digits and ``._@-``, starting with a letter or digit."""
    if not _USERNAME_RE.fullmatch(username):
        raise UserError(
            "username must be 1-64 characters of letters, digits and ._@- "
            "(starting with a letter or digit)"
        )
    return username


def hash_password(password: str) -> str:
    """An argon2id hash string (libsodium's interactive limits)."""
    return nacl.pwhash.argon2id.str(password.encode("utf-8")).decode("ascii")


def _check(stored: str, password: str) -> bool:
    try:
        return bool(nacl.pwhash.argon2id.verify(stored.encode("ascii"), password.encode("utf-8")))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError):
        return False


class PasswordChecker:
    """Verifies passwords in threads, at most ``concurrency`` at a time."""

    def __init__(self, concurrency: int) -> None:
        self._semaphore = asyncio.Semaphore(concurrency)

    async def check(self, stored: str | None, password: str) -> bool:
        """True when ``password`` matches ``stored``; an unknown user (None) costs the same."""
        async with self._semaphore:
            if stored is None:
                # Same work for unknown users, so timing does not tell which usernames exist.
                await asyncio.to_thread(_check, _DUMMY_HASH, password)
                return False
            return await asyncio.to_thread(_check, stored, password)


async def create_user(
    sessionmaker: async_sessionmaker[AsyncSession], username: str, password: str, role: str,
) -> User:
    """Create a user; UserError when the name is taken or malformed, the password too short."""
    validate_username(username)
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    async with read_session(sessionmaker) as session:
        existing = await session.scalar(select(User.id).where(User.username == username))
        if existing is not None:
            raise UserError(f"a user named {username!r} already exists")
    password_hash = await asyncio.to_thread(hash_password, password)
    user = User(username=username, password_hash=password_hash, role=role)
    try:
        async with write_session(sessionmaker) as session:
            session.add(user)
    except IntegrityError:
        # Lost a race with another create of the same name.
        raise UserError(f"a user named {username!r} already exists") from None
    return user
