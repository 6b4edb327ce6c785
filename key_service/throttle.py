"""Login throttling, shared by replicas via the database.

Failures are counted in a fixed window that opens at the first failure, against three subjects:
a username from one client address (a small limit: guessing one account's password from one
place), a client address (guessing across accounts), and a username from every address
together (a distributed guess; a large limit, NIST SP 800-63B's 100 by default). Once a
subject reaches its limit, logins for it get 429 until the window closes. So a stranger's
wrong passwords lock an account only for the stranger's own address; locking it for everyone
takes the large limit, from at least that many over the small one addresses, and even then not
from an address the username logged in from lately (a success marks the pair "known" for 30
days). IPv6 addresses count by their /64. A success clears the username's counts (not the
address's: one good account must not launder guesses against others).

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

from apikeys_shared.addresses import address_group

from .db import read_session, write_session
from .errors import TooManyRequests
from .models import LoginThrottle, UTCDateTime, utcnow

__all__ = ["LoginThrottler"]

_T = LoginThrottle.__table__
# How long a username's successful login from an address exempts that pair from the
# per-username limit.
_KNOWN_FOR = timedelta(days=30)


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
        """The subjects an attempt counts against: pair, user, and (with an address) address.

        The username as written: logins match it exactly, so ``admin`` and ``Admin`` are two
        accounts, and one's successful login must not clear (or vouch for) the other's count.
        """
        user = username
        where = address_group(address) if address else ""
        # Without an address (never over TCP) the pair is the username alone: the small limit.
        subjects = [("pair", f"{where} {user}"[:128]), ("user", user[:128])]
        if where:
            subjects.append(("address", where[:128]))
        return subjects

    async def _rows(
        self, session: AsyncSession, subjects: list[tuple[str, str]],
    ) -> list[LoginThrottle]:
        """The subjects' rows, less the username's own when this pair logged in lately: the
        per-username limit stops a guess spread over many addresses, but must not lock the
        account's owner out from where the owner logs in."""
        known = ("known", subjects[0][1])
        rows = (await session.scalars(
            select(LoginThrottle).where(
                tuple_(LoginThrottle.scope, LoginThrottle.subject).in_([*subjects, known])
            )
        )).all()
        trusted = any(
            row.scope == "known" and row.window_start > utcnow() - _KNOWN_FOR for row in rows
        )
        return [
            row for row in rows
            if row.scope != "known" and not (trusted and row.scope == "user")
        ]

    async def check(self, username: str, address: str | None) -> None:
        """Raise TooManyRequests (with Retry-After) when a subject is over its limit."""
        now = utcnow()
        async with read_session(self._sessionmaker) as session:
            rows = await self._rows(session, self._subjects(username, address))
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
            rows = await self._rows(session, subjects)
        over = [row for row in rows if row.failures > self._limits[row.scope]]
        if over:
            wait = max((row.window_start + self._window - now).total_seconds() for row in over)
            raise TooManyRequests(
                "too many failed logins; try again later", retry_after=max(1, math.ceil(wait))
            )

    async def succeeded(self, username: str, address: str | None = None) -> None:
        """Clear the username's failures after a good login, and take back the address's
        reservation (see ``reserve``)."""
        subjects = self._subjects(username, address)
        pair, user = subjects[:2]
        now = utcnow()
        async with write_session(self._sessionmaker) as session:
            await session.execute(delete(LoginThrottle).where(
                tuple_(LoginThrottle.scope, LoginThrottle.subject).in_([pair, user])
            ))
            # Where this username logs in from: exempt from the per-username limit for a while.
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            await session.execute(
                insert(LoginThrottle)
                .values(scope="known", subject=pair[1], failures=0, window_start=now)
                .on_conflict_do_update(
                    index_elements=["scope", "subject"],
                    set_={"window_start": literal(now, UTCDateTime())},
                )
            )
            if len(subjects) > 2:
                await session.execute(
                    update(LoginThrottle)
                    .where(
                        LoginThrottle.scope == "address",
                        LoginThrottle.subject == subjects[2][1],
                        LoginThrottle.failures > 0,
                    )
                    .values(failures=LoginThrottle.failures - 1)
                )
