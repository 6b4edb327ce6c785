"""Login throttling, shared by replicas via the database.

Failures are counted in a fixed window that opens at the first failure, against three subjects:
a username from one client address (a small limit: guessing one account's password from one
place), a client address (guessing across accounts), and a username from every address
together (a distributed guess; a large limit, NIST SP 800-63B's 100 by default). Once a
subject reaches its limit, logins for it get 429 until the window closes. So a stranger's
wrong passwords lock an account only for the stranger's own address; locking it for everyone
takes the large limit, from at least that many over the small one addresses. A success clears
the username's counts (not the address's: one good account must not launder guesses against
others).

Every attempt is counted as a failure *before* its password is checked (``reserve``), in one
write transaction that also reads the new counts: checking first and counting after the slow
password check would let concurrent guesses all pass the check before any of them is counted.
A success then takes its reservation back (``succeeded``).
"""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import case, delete, literal, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .db import read_session, write_session
from .errors import TooManyRequests
from .models import LoginThrottle, UTCDateTime, utcnow

__all__ = ["LoginThrottler"]

_T = LoginThrottle.__table__


class LoginThrottler:
    """Counts failed logins and refuses logins past the limits."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *, per_pair: int,
        per_address: int, per_user: int, window_seconds: int,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._limits = {"pair": per_pair, "address": per_address, "user": per_user}
        self._window = timedelta(seconds=window_seconds)

    @staticmethod
    def _subjects(username: str, address: str | None) -> list[tuple[str, str]]:
        user = username.lower()
        # Without an address (never over TCP) the pair is the username alone: the small limit.
        subjects = [("pair", f"{(address or '')[:64]} {user}"[:128]), ("user", user[:128])]
        if address:
            subjects.append(("address", address[:128]))
        return subjects

    async def check(self, username: str, address: str | None) -> None:
        """Raise TooManyRequests (with Retry-After) when either subject is over its limit."""
        now = utcnow()
        subjects = self._subjects(username, address)
        async with read_session(self._sessionmaker) as session:
            rows = (await session.scalars(
                select(LoginThrottle).where(
                    tuple_(LoginThrottle.scope, LoginThrottle.subject).in_(subjects)
                )
            )).all()
        wait = 0.0
        for row in rows:
            ends = row.window_start + self._window
            if ends > now and row.failures >= self._limits[row.scope]:
                wait = max(wait, (ends - now).total_seconds())
        if wait > 0:
            raise TooManyRequests(
                "too many failed logins; try again later", retry_after=max(1, math.ceil(wait))
            )

    async def _count(
        self, session: AsyncSession, username: str, address: str | None,
    ) -> None:
        now = utcnow()
        cutoff = now - self._window
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        for scope, subject in self._subjects(username, address):
            stmt = insert(LoginThrottle).values(
                scope=scope, subject=subject, failures=1, window_start=now
            )
            expired = _T.c.window_start <= cutoff
            stmt = stmt.on_conflict_do_update(
                index_elements=["scope", "subject"],
                set_={
                    "failures": case((expired, 1), else_=_T.c.failures + 1),
                    "window_start": case(
                        (expired, literal(now, UTCDateTime())), else_=_T.c.window_start
                    ),
                },
            )
            await session.execute(stmt)

    async def reserve(self, username: str, address: str | None) -> None:
        """Count this attempt as a failure now; TooManyRequests if that goes past a limit.

        The count and the read of it share one transaction (SQLite: the write lock;
        PostgreSQL: the upserted rows stay locked until commit), so of N concurrent attempts
        exactly as many as the limit allows get to check a password.
        """
        now = utcnow()
        subjects = self._subjects(username, address)
        async with write_session(self._sessionmaker) as session:
            await self._count(session, username, address)
            rows = (await session.scalars(
                select(LoginThrottle).where(
                    tuple_(LoginThrottle.scope, LoginThrottle.subject).in_(subjects)
                )
            )).all()
        over = [row for row in rows if row.failures > self._limits[row.scope]]
        if over:
            wait = max((row.window_start + self._window - now).total_seconds() for row in over)
            raise TooManyRequests(
                "too many failed logins; try again later", retry_after=max(1, math.ceil(wait))
            )

    async def succeeded(self, username: str, address: str | None = None) -> None:
        """Clear the username's failures after a good login, and take back the address's
        reservation (see ``reserve``)."""
        pair, user = self._subjects(username, address)[:2]
        async with write_session(self._sessionmaker) as session:
            await session.execute(delete(LoginThrottle).where(
                tuple_(LoginThrottle.scope, LoginThrottle.subject).in_([pair, user])
            ))
            if address:
                await session.execute(
                    update(LoginThrottle)
                    .where(
                        LoginThrottle.scope == "address",
                        LoginThrottle.subject == address[:128],
                        LoginThrottle.failures > 0,
                    )
                    .values(failures=LoginThrottle.failures - 1)
                )
