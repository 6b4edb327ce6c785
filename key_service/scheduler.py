"""The revocation scheduler: revokes a rolled key when its overlap ends.

Rolling a key gives the old key a ``revokes_at`` (keys.py). This loop, one per key_service
process, turns that moment into a revocation: status ``revoked``, an audit row by key_service
itself, and a ``key.revoked`` event through the outbox, exactly as a revocation by hand.

Why it can be trusted, and why it needs no leader:

* **The schedule is the database.** Nothing is held in memory but a hint of when to look next,
  so a restart loses nothing; the first round after start revokes every key that fell due while
  no process ran (``revoked_at`` is then the scheduled moment, not the late one).
* **Exactly once, with any number of replicas.** Every replica runs this loop. ``revoke_due``
  locks the due rows it takes (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite has one writer at
  a time) and only revokes keys still active, so two replicas, or a scheduler and an
  administrator, never revoke a key twice, and never write two events for it.
* **On time without polling hard.** The loop sleeps until the earliest ``revokes_at`` it knows
  of, at most ``POLL_INTERVAL`` (to see rolls made on other replicas), and a roll on this
  replica wakes it at once.
* **Gateways do not wait for it.** A rolled key's signed record already carries ``revokes_at``;
  gateways can refuse the key from that moment with their own clock even while key_service,
  RabbitMQ or Redis is down. This loop makes the database, the page and subscribers agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from .appkeys import CONFIG, METRICS, OUTBOX_WAKEUP, SCHEDULER_WAKEUP, SESSIONMAKER
from .background import finish
from .keys import DUE_BATCH, Clock, KeyService
from .metrics import Metrics
from .models import utcnow

__all__ = ["POLL_INTERVAL", "RevocationScheduler", "scheduler_ctx", "seconds_until"]

log = logging.getLogger(__name__)

POLL_INTERVAL = 30.0
# A due key that another transaction holds is left to it; look again shortly, not at once.
MIN_WAIT = 0.1
MAX_BACKOFF = 5.0
STOP_TIMEOUT = 10.0


def seconds_until(now: datetime, due: datetime | None, poll_interval: float) -> float:
    """How long to sleep before the next round: until ``due``, at most ``poll_interval``."""
    if due is None:
        return poll_interval
    return min(poll_interval, max(MIN_WAIT, (due - now).total_seconds()))


class RevocationScheduler:
    """Revokes rolled keys whose ``revokes_at`` has come; see the module docstring."""

    def __init__(
        self, service: KeyService, *, wakeup: asyncio.Event, metrics: Metrics,
        clock: Clock = utcnow, poll_interval: float = POLL_INTERVAL, batch: int = DUE_BATCH,
    ) -> None:
        self._service = service
        self._batch = batch
        self._wakeup = wakeup
        self._metrics = metrics
        self._clock = clock
        self._poll_interval = poll_interval
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """Revoke every key due now (by this scheduler's clock); return how many."""
        total = 0
        while True:
            done = len(await self._service.revoke_due(self._clock(), self._batch))
            total += done
            if done < self._batch:
                break
        if total:
            log.info("revoked %d rolled key(s) at the end of their overlap", total)
        return total

    async def start(self) -> None:
        """Start the background task; its first round catches up at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="key_service revocation scheduler")

    async def stop(self) -> None:
        """Finish the round in progress, then stop."""
        self._stop.set()
        self._wakeup.set()
        task, self._task = self._task, None
        await finish(task, STOP_TIMEOUT)

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            # Cleared before the round, so a roll committed during it triggers another.
            self._wakeup.clear()
            try:
                await self.run_once()
                due = await self._service.next_revocation()
                wait = seconds_until(self._clock(), due, self._poll_interval)
                backoff = 0.0
            except (SQLAlchemyError, OSError) as exc:
                self._metrics.scheduler_errors.inc()
                backoff = wait = min(max(backoff * 2, MIN_WAIT), MAX_BACKOFF)
                log.warning("revocation scheduler: database unavailable (%s); retrying in "
                            "%.1fs", type(exc).__name__, wait)
            except Exception:
                # A bug must not end scheduled revocations for the life of the process.
                self._metrics.scheduler_errors.inc()
                wait = MAX_BACKOFF
                log.exception("revocation scheduler: unexpected error; retrying in %.1fs", wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context that runs the revocation scheduler for the app's lifetime."""
    service = KeyService(
        app[SESSIONMAKER], app[CONFIG].secrets.peppers, wakeup=app[OUTBOX_WAKEUP],
        metrics=app[METRICS],
    )
    scheduler = RevocationScheduler(
        service, wakeup=app[SCHEDULER_WAKEUP], metrics=app[METRICS],
    )
    await scheduler.start()
    try:
        yield
    finally:
        await scheduler.stop()
