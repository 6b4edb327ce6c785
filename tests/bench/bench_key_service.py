"""Benchmark of key_service (not a test): issue throughput, list latency, relay throughput.

Run: ``python -m tests.bench.bench_key_service [--issues N] [--keys N] [--concurrency N]``

* Issue throughput goes through the service layer (``KeyService.issue``: hash, key row, audit
  row and outbox row in one transaction), with ``--concurrency`` callers at once, on a fresh
  SQLite file and a fresh PostgreSQL database (both removed afterwards). The baseline is a raw
  single-row INSERT transaction on the same engine with the same concurrency.
* List latency: ``KeyService.list(50)`` over ``--keys`` keys (bulk-inserted, a tenth of them
  revoked), for the first page and for a page deep in the list (reached by cursor), against
  a bare ``SELECT 1`` round trip on the same engine.
* Relay throughput: events per second from a filled outbox to a bound RabbitMQ queue
  (persistent, confirmed one by one), and the commit-to-confirm latency of a single event.

Aims from the issue: at least 500 issues/s on PostgreSQL, list p95 under 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import aio_pika
from sqlalchemy import Table, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from apikeys_shared.config import generate_secrets
from apikeys_shared.keys import new_key_id
from key_service.config import KeyServiceConfig, load_config
from key_service.db import create_engine, make_sessionmaker, migrate_async
from key_service.keys import Actor, KeyService
from key_service.metrics import Metrics
from key_service.models import ApiKey, AuditEntry
from key_service.relay import Relay
from tests.bench.stats import percentile
from tests.bench.table import Row, latencies, print_rows
from tests.support.services import RABBITMQ_URL, temporary_database

_ACTOR = Actor(user_id=None, username="bench", client_address="127.0.0.1", request_id="bench")


def _secrets() -> dict[str, str]:
    return generate_secrets()


def _postgres() -> contextlib.AbstractAsyncContextManager[str]:
    return temporary_database("apikeys_bench_")


async def rate(total: int, concurrency: int, call: Callable[[int], Awaitable[object]]) -> float:
    """Calls per second of ``total`` calls made by ``concurrency`` workers."""
    counter = iter(range(total))

    async def worker() -> None:
        for n in counter:
            await call(n)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start)


async def _bulk_keys(engine: AsyncEngine, count: int) -> None:
    """``count`` keys, a tenth revoked, issued one second apart, inserted in large batches."""
    table = cast(Table, ApiKey.__table__)
    start = datetime.now(UTC) - timedelta(seconds=count + 10)
    batch: list[dict[str, object]] = []
    for n in range(count):
        issued = start + timedelta(seconds=n)
        revoked = n % 10 == 0
        batch.append({
            "key_id": new_key_id(), "name": f"bulk key {n}", "secret_hash": f"{n:064x}",
            "hash_version": "p1", "status": "revoked" if revoked else "active",
            "issued_at": issued, "revoked_at": issued + timedelta(hours=1) if revoked else None,
            "issued_by": None, "revoked_by": None,
        })
        if len(batch) == 5000 or n == count - 1:
            async with engine.begin() as conn:
                await conn.execute(insert(table), batch)
            batch = []


async def _bench_database(
    backend: str, url: str, config: KeyServiceConfig, args: argparse.Namespace,
) -> list[Row]:
    rows: list[Row] = []
    await migrate_async(url)
    engine = create_engine(url, pool_size=max(args.concurrency, 5))
    try:
        sessionmaker = make_sessionmaker(engine)
        service = KeyService(sessionmaker, config.secrets.peppers)
        audit = cast(Table, AuditEntry.__table__)

        async def raw_insert(n: int) -> None:
            async with engine.begin() as conn:
                await conn.execute(insert(audit).values(
                    at=datetime.now(UTC), actor="bench", action="baseline",
                    key_id=f"{n:036d}",
                ))

        async def issue(n: int) -> None:
            await service.issue(f"bench {n}", _ACTOR)


        for concurrency in sorted({1, args.concurrency}):
            baseline = await rate(args.issues, concurrency, raw_insert)
            issued = await rate(args.issues, concurrency, issue)
            rows.append(Row(
                backend, f"issue, service layer, concurrency {concurrency}",
                f"{issued:,.0f} issues/s", f"{baseline:,.0f} raw INSERT tx/s",
                f"{issued / baseline:.2f}x",
            ))

        await _bulk_keys(engine, args.keys)

        async def select_one() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        ping = await latencies(args.samples, select_one)
        ping50 = percentile(ping, 50)
        first = await latencies(args.samples, lambda: service.list(50))
        # A cursor deep in the list: past half of all keys (well inside the active ones).
        cursor: str | None = None
        for _ in range(args.keys // 2 // 500):
            page = await service.list(500, cursor)
            cursor = page.next_cursor
        deep_cursor = cursor
        deep = await latencies(args.samples, lambda: service.list(50, deep_cursor))
        total = args.keys + args.issues * len({1, args.concurrency})
        for label, samples in ((f"list first page of {total:,}", first),
                               (f"list page past key {args.keys // 2:,}", deep)):
            p50, p95 = percentile(samples, 50), percentile(samples, 95)
            rows.append(Row(
                backend, label, f"p50 {p50:.2f} ms, p95 {p95:.2f} ms",
                f"SELECT 1 p50 {ping50:.2f} ms", f"{p50 / ping50:.1f}x",
            ))
        rows.extend(await _bench_relay(backend, engine, service, config, args))
    finally:
        await engine.dispose()
    return rows


async def _bench_relay(
    backend: str, engine: AsyncEngine, service: KeyService, config: KeyServiceConfig,
    args: argparse.Namespace,
) -> list[Row]:
    """Drain the outbox the issue benchmark filled, then time single events end to end."""
    exchange = f"bench.{uuid.uuid4().hex[:10]}.apikeys.events"
    config = replace(config, exchange=exchange)
    connection = await aio_pika.connect(RABBITMQ_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(ex, "#")
        wakeup, metrics = asyncio.Event(), Metrics()
        relay = Relay(engine=engine, config=config, metrics=metrics, wakeup=wakeup)
        service = KeyService(make_sessionmaker(engine), config.secrets.peppers, wakeup=wakeup)
        published = "key_service_events_published_total"
        start = time.perf_counter()
        await relay.start()
        try:
            backlog = args.issues * len({1, args.concurrency})
            while (metrics.registry.get_sample_value(published) or 0) < backlog:
                await asyncio.sleep(0.01)
            drain = backlog / (time.perf_counter() - start)
            latencies: list[float] = []
            for n in range(50):
                before = metrics.registry.get_sample_value(published) or 0
                began = time.perf_counter()
                await service.issue(f"latency {n}", _ACTOR)
                while (metrics.registry.get_sample_value(published) or 0) <= before:
                    await asyncio.sleep(0.0005)
                latencies.append((time.perf_counter() - began) * 1000)
        finally:
            await relay.stop()
            await channel.exchange_delete(exchange)
    return [
        Row(backend, f"relay drain of {backlog:,} events (serial confirms)",
            f"{drain:,.0f} events/s", "", ""),
        Row(backend, "issue → broker confirm, one event",
            f"p50 {percentile(latencies, 50):.1f} ms, p95 {percentile(latencies, 95):.1f} ms",
            "", ""),
    ]


def _print(rows: list[Row], args: argparse.Namespace, seconds: float) -> None:
    print_rows("key_service benchmark",
               f"{args.issues:,} issues per concurrency, {args.keys:,} keys, "
               f"{args.samples} samples, {seconds:.0f} s",
               rows, ">= 500 issues/s on PostgreSQL; list p95 < 20 ms")


async def _main(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    env = _secrets()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="apikeys-bench-") as tmp:
        sqlite_url = f"sqlite+aiosqlite:///{Path(tmp) / 'keys.db'}"
        base = load_config({**env, "KEY_SERVICE_DATABASE_URL": sqlite_url,
                            "KEY_SERVICE_DATA_DIR": tmp})
        if "sqlite" in args.backends:
            rows += await _bench_database("SQLite", sqlite_url, base, args)
        if "postgres" in args.backends:
            async with _postgres() as pg_url:
                rows += await _bench_database(
                    "PostgreSQL", pg_url, replace(base, database_url=pg_url), args,
                )
    _print(rows, args, time.perf_counter() - began)


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=2000, help="keys issued per backend")
    parser.add_argument("--keys", type=int, default=100_000, help="keys bulk-inserted to list")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent issuers")
    parser.add_argument("--samples", type=int, default=300, help="latency samples per figure")
    parser.add_argument("--backends", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres")
    args = parser.parse_args()
    args.backends = {b.strip() for b in args.backends.split(",")}
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
