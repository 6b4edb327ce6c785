"""The outbox relay: publishes sequenced outbox rows to RabbitMQ, in order, confirmed.

One background task per process. It wakes when the service layer sets ``app[OUTBOX_WAKEUP]``
after a commit (no polling delay on the happy path), when another replica NOTIFYs that it
sequenced rows (PostgreSQL), and on a slow timer as a safety net. Each round it sequences
pending rows (see ``outbox``), then publishes the unsent ones in sequence order.

Delivery rules, and why:

* Messages are persistent, ``mandatory``, published on a channel with publisher confirms, and
  a row's ``sent_at`` is set only after the broker's ack. A crash between the ack and that
  update republishes the row: consumers deduplicate by event ID and sequence.
* One message at a time, each confirmed before the next is sent. Pipelining would be faster,
  but a message the broker nacks could then be overtaken by the ones behind it; strictly
  serial publishing keeps order even then. It still relays several hundred to over a thousand
  events per second on one host (``tests/bench/bench_key_service.py``), more than the aimed
  issue rate. Acks of a batch are recorded with one UPDATE.
* A *returned* message (no queue bound for its routing key) was accepted by the broker and
  dropped there. It is counted in ``relay_errors`` and logged, then treated as delivered: the
  feed (``/internal/v1/events``) is the durable record that every gateway replays from, so a
  moment with no subscriber loses nothing, whereas holding the outbox until someone binds a
  queue would stall every later event, possibly for ever (a fresh deployment with no gateway
  yet, or a subscriber that only cares about other routing keys).
* Broker away, nack, timeout: the row stays unsent, the relay backs off exponentially (capped
  at a few seconds) and retries from the first unconfirmed row, on a fresh connection: with
  several nodes in ``RABBITMQ_URL``, to the next node (``apikeys_shared.amqp``). Issuing and
  revoking never wait for the relay.
* Several replicas: only the holder of the relay lock publishes (PostgreSQL: a session-level
  advisory lock; SQLite: an flock on ``<database>.relay-lock``); the others sequence rows
  (under the sequencer's own lock) and try to take over once a poll interval. A lock holder
  that dies releases its lock with its connection or process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq.abc
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apikeys_shared.amqp import BrokerAddresses
from apikeys_shared.events import CONTENT_TYPE
from apikeys_shared.signing import Signer

from .appkeys import CONFIG, ENGINE, METRICS, OUTBOX_WAKEUP
from .background import finish
from .config import KeyServiceConfig
from .metrics import Metrics
from .outbox import (
    NOTIFY_CHANNEL,
    RELAY_LOCK_KEY,
    OutboxError,
    PendingEvent,
    backlog,
    fetch_unsent,
    mark_sent,
    sequence_pending,
)

__all__ = ["Relay", "RelayError", "relay_ctx"]

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
MIN_BACKOFF = 0.1
MAX_BACKOFF = 4.0
CONNECT_TIMEOUT = 5.0
PUBLISH_TIMEOUT = 5.0
BATCH = 500
STOP_TIMEOUT = 10.0
CLOSE_TIMEOUT = 1.0

# Everything aio-pika / aiormq raise when the broker is away, slow or refuses a message.
_BROKER_ERRORS = (
    aio_pika.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)


class RelayError(Exception):
    """The broker could not be reached or did not confirm a message."""


class Relay:
    """Sequences and publishes outbox rows for one process; see the module docstring."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        config: KeyServiceConfig,
        metrics: Metrics,
        wakeup: asyncio.Event,
        poll_interval: float = POLL_INTERVAL,
        max_backoff: float = MAX_BACKOFF,
        batch: int = BATCH,
        publish_timeout: float = PUBLISH_TIMEOUT,
    ) -> None:
        if config.secrets.signer is None:
            raise ValueError("the relay needs the signing key (APIKEYS_SIGNING_KEY)")
        self._engine = engine
        self._config = config
        self._signer: Signer = config.secrets.signer
        self._metrics = metrics
        self._wakeup = wakeup
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._batch = batch
        self._publish_timeout = publish_timeout
        self._postgres = engine.dialect.name == "postgresql"
        self._lock_path = _sqlite_lock_path(engine)
        self._lock_fd: int | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._brokers = BrokerAddresses(config.rabbitmq_url)
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._lock_conn: AsyncConnection | None = None
        # Rows the broker confirmed but whose sent_at could not be written (database away):
        # written first thing next round, so they are not published a second time.
        self._unmarked: list[int] = []
        self._next_lock_try = 0.0

    @property
    def is_leader(self) -> bool:
        """True while this process holds the relay lock and so may publish."""
        if self._postgres:
            return self._lock_conn is not None
        return self._lock_path is None or self._lock_fd is not None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the background task."""
        if self._task is None:
            self._wakeup.set()  # rows left unsent by an earlier run go out at once
            self._task = asyncio.create_task(self._run(), name="key_service outbox relay")

    async def stop(self) -> None:
        """Finish the message in flight, then close the broker connection and the lock."""
        self._stop.set()
        self._wakeup.set()
        task, self._task = self._task, None
        await finish(task, STOP_TIMEOUT)
        await self._close_broker()
        await self._release_lock()

    # -- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            if backoff:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._poll_interval)
            if self._stop.is_set():
                break
            # Cleared before the round, so a commit during the round triggers another one.
            self._wakeup.clear()
            try:
                await self._round()
                backoff = 0.0
            except (RelayError, OutboxError) as exc:
                self._metrics.relay_errors.inc()
                backoff = min(max(backoff * 2, MIN_BACKOFF), self._max_backoff)
                log.warning("outbox relay: %s; retrying in %.1fs", exc, backoff)
            except Exception:
                # A bug must not kill the relay for the life of the process.
                self._metrics.relay_errors.inc()
                backoff = self._max_backoff
                log.exception("outbox relay: unexpected error; retrying in %.1fs", backoff)
            with contextlib.suppress(OutboxError):
                self._metrics.outbox_backlog.set(await backlog(self._engine))

    async def _round(self) -> None:
        if self._unmarked:
            await mark_sent(self._engine, self._unmarked, datetime.now(UTC))
            self._unmarked = []
        leader = await self._ensure_lock()
        # A replica that does not publish tells the one that does (NOTIFY, PostgreSQL only).
        await sequence_pending(
            self._engine, source=self._config.event_source, signer=self._signer,
            notify=not leader,
        )
        while leader and not self._stop.is_set():
            events = await fetch_unsent(self._engine, self._batch)
            if not events:
                return
            exchange = await self._ensure_exchange()
            await self._publish(exchange, events)
            if len(events) < self._batch:
                return

    async def _publish(
        self, exchange: aio_pika.abc.AbstractExchange, events: list[PendingEvent],
    ) -> None:
        confirmed: list[PendingEvent] = []
        returned = 0
        failure: BaseException | None = None
        for event in events:
            if self._stop.is_set():
                break
            message = aio_pika.Message(
                body=event.signed.body,
                content_type=CONTENT_TYPE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=event.event_id,
                headers=dict(event.signed.amqp_headers),
                app_id="key_service",
            )
            try:
                async with asyncio.timeout(self._publish_timeout):
                    result = await exchange.publish(
                        message, routing_key=event.routing_key, mandatory=True,
                    )
            except _BROKER_ERRORS as exc:
                failure = exc
                break
            if isinstance(result, aiormq.abc.DeliveredMessage):
                returned += 1
            confirmed.append(event)
            self._metrics.relay_publish_seconds.observe(
                max(0.0, (datetime.now(UTC) - event.created_at).total_seconds())
            )
        if failure is not None:
            # A publish that failed or timed out leaves the connection in doubt (a half-open
            # socket keeps failing the same way): start over with a fresh one next round.
            await self._close_broker()
        self._metrics.events_published.inc(len(confirmed))
        # Record what the broker confirmed even when a later message failed, so it is not
        # published again.
        try:
            await mark_sent(self._engine, [e.id for e in confirmed], datetime.now(UTC))
        except OutboxError:
            self._unmarked = [e.id for e in confirmed]
            raise
        if returned:
            self._metrics.relay_errors.inc(returned)
            log.warning(
                "outbox relay: %d event(s) returned by the broker: no queue is bound to "
                "exchange %s for them; gateways will catch up from the feed",
                returned, self._config.exchange,
            )
        if failure is not None:
            raise RelayError(
                f"publishing sequence {events[len(confirmed)].sequence} failed: "
                f"{failure.__class__.__name__}: {failure}"
            ) from failure

    # -- the broker ------------------------------------------------------------------------
    async def _ensure_exchange(self) -> aio_pika.abc.AbstractExchange:
        if self._exchange is not None and self._channel is not None and not (
            self._channel.is_closed
        ):
            return self._exchange
        if self._connection is not None and self._connection.is_closed:
            # Lost while idle: a fresh connection, to the next node of a cluster.
            await self._close_broker()
        try:
            if self._connection is None:
                self._connection = await self._brokers.connect(
                    timeout=CONNECT_TIMEOUT,
                    client_properties={"connection_name": "key_service outbox relay"},
                )
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._drop_channel()
                channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=False,
                )
                self._channel = channel
                self._exchange = await channel.declare_exchange(
                    self._config.exchange, aio_pika.ExchangeType.TOPIC, durable=True,
                )
        except (*_BROKER_ERRORS, RuntimeError) as exc:
            # aio-pika raises RuntimeError for a channel asked of a connection that the broker
            # closed a moment ago. Whatever failed, start over with a fresh connection.
            await self._close_broker()
            # Never log the URL: it carries the broker password.
            raise RelayError(
                f"RabbitMQ is not reachable: {exc.__class__.__name__}: {exc}"
            ) from exc
        return self._exchange

    async def _drop_channel(self) -> None:
        channel, self._channel, self._exchange = self._channel, None, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*_BROKER_ERRORS, RuntimeError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await channel.close()

    async def _close_broker(self) -> None:
        await self._drop_channel()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(*_BROKER_ERRORS, RuntimeError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await connection.close()

    # -- the relay lock (PostgreSQL) -------------------------------------------------------
    async def _ensure_lock(self) -> bool:
        """True if this process holds the relay lock (taking it when free)."""
        if not self._postgres:
            return self._ensure_file_lock()
        if self._lock_conn is not None:
            try:
                # The session lock lives exactly as long as this connection does.
                await self._lock_conn.execute(text("SELECT 1"))
                return True
            except SQLAlchemyError:
                log.warning("outbox relay: lost the connection holding the relay lock")
                await self._release_lock()
        now = time.monotonic()
        if now < self._next_lock_try:
            return False
        self._next_lock_try = now + self._poll_interval
        try:
            conn = await self._engine.connect()
        except SQLAlchemyError as exc:
            raise OutboxError(f"database unreachable: {exc.__class__.__name__}") from exc
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = (await conn.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": RELAY_LOCK_KEY}
            )).scalar_one()
            if got:
                raw = await conn.get_raw_connection()
                driver: Any = raw.driver_connection
                await driver.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except Exception as exc:
            # Driver-level errors (add_listener) are not SQLAlchemy's: catch all, and always
            # hand the connection back, or the pool warns about it at garbage collection.
            await self._discard(conn)
            raise OutboxError(f"taking the relay lock failed: {exc.__class__.__name__}") from exc
        if not got:
            await conn.close()
            return False
        self._lock_conn = conn
        log.info("outbox relay: this process now publishes events")
        return True

    def _ensure_file_lock(self) -> bool:
        # SQLite: an exclusive flock on a file beside the database stands in for the advisory
        # lock, so two processes on one database file never both publish.
        if self._lock_path is None or self._lock_fd is not None:
            return True
        now = time.monotonic()
        if now < self._next_lock_try:
            return False
        self._next_lock_try = now + self._poll_interval
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise OutboxError(f"cannot open the relay lock file: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        log.info("outbox relay: this process now publishes events")
        return True

    def _on_notify(self, *_args: object) -> None:
        self._wakeup.set()

    async def _release_lock(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        if conn is not None:
            await self._discard(conn)
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock

    @staticmethod
    async def _discard(conn: AsyncConnection) -> None:
        # Closing the session (not returning it to the pool) releases the advisory lock and
        # the LISTEN with it. Best effort: the database may be gone, and then so is the lock.
        with contextlib.suppress(Exception):
            await conn.invalidate()
        with contextlib.suppress(Exception):
            await conn.close()


def _sqlite_lock_path(engine: AsyncEngine) -> str | None:
    """``<database file>.relay-lock`` for a SQLite file; None for PostgreSQL and memory."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return f"{database}.relay-lock"


async def relay_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context that runs the sequencer and relay for the app's lifetime."""
    relay = Relay(
        engine=app[ENGINE], config=app[CONFIG], metrics=app[METRICS], wakeup=app[OUTBOX_WAKEUP],
    )
    await relay.start()
    try:
        yield
    finally:
        await relay.stop()
