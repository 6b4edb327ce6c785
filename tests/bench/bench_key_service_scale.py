"""Benchmark of key_service on PostgreSQL holding 1,000,000 keys and their events (not a test).

Run: ``python -m tests.bench.bench_key_service_scale [--keys N] [--issues N] [--samples N]``

A fresh PostgreSQL database, migrated, holding ``--keys`` active keys and one signed ``issued``
event for each in the outbox (the feed), written by key_service's own code (``history``), then
ANALYZEd. Measured at key_service's service layer, each beside a baseline on the same engine in
the same run:

* issue, ``--concurrency`` callers at once (``KeyService.issue``: hash, key row, audit row and
  outbox row in one transaction), against a raw single-row INSERT transaction;
* revoke, one call at a time on keys picked at random across the table (``KeyService.revoke``:
  the key row locked and updated, audit and outbox rows, one transaction), against a raw
  single-row UPDATE transaction on the same table;
* feed reads, from sequence 0 in pages of the gateways' size (``outbox.fetch_feed``: the signed
  events in order, as ``GET /internal/v1/events`` and ``GET /api/v1/events`` serve them), against
  a raw read of the same rows' columns in the same pages.

Aims (issue 17): issue >= 500 keys/s at concurrency 16, revoke p99 <= 20 ms, feed reads >=
50,000 events/s, at 1,000,000 keys.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, insert, select, text, update

from apikeys_shared.config import generate_secrets
from key_service.config import load_config
from key_service.db import create_engine, make_sessionmaker, migrate_async
from key_service.keys import Actor, KeyService
from key_service.models import ApiKey, AuditEntry, OutboxEvent
from key_service.outbox import fetch_feed
from tests.support.services import temporary_database

from .bench_key_service import rate
from .history import build_history
from .stats import percentile
from .table import Row, latencies, print_rows

__all__ = ["main"]

AIM_ISSUES = 500.0
AIM_REVOKE_P99_MS = 20.0
AIM_FEED = 50_000.0
FEED_PAGE = 500  # the gateway's page (auth_gateway.sync.FEED_PAGE_SIZE)
_ACTOR = Actor(user_id=None, username="bench", client_address="127.0.0.1", request_id="bench")


def _verdict(met: bool) -> str:
    return "met" if met else "not met"


async def _bench(url: str, args: argparse.Namespace) -> list[Row]:
    await migrate_async(url)
    with tempfile.TemporaryDirectory(prefix="apikeys-bench-") as data:
        config = load_config({**generate_secrets(), "KEY_SERVICE_DATABASE_URL": url,
                              "KEY_SERVICE_DATA_DIR": data})
    print(f"  writing {args.keys:,} keys and their events…", file=sys.stderr, flush=True)
    built = await build_history(
        config, keys=args.keys, revoked=0,
        progress=lambda line: print(f"  history: {line}", file=sys.stderr, flush=True))
    engine = create_engine(url, pool_size=args.concurrency)
    keys_table = cast(Table, ApiKey.__table__)
    audit = cast(Table, AuditEntry.__table__)
    outbox = cast(Table, OutboxEvent.__table__)
    backend = f"PostgreSQL, {args.keys:,} keys"
    try:
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
            picked = list((await conn.execute(
                select(keys_table.c.key_id).order_by(text("random()")).limit(2 * args.samples + 10)
            )).scalars())
        service = KeyService(make_sessionmaker(engine), config.secrets.peppers)

        async def raw_insert(n: int) -> None:
            async with engine.begin() as conn:
                await conn.execute(insert(audit).values(
                    at=datetime.now(UTC), actor="bench", action="baseline", key_id=f"{n:036d}"))

        async def issue(n: int) -> None:
            await service.issue(f"scale bench {n}", _ACTOR)

        baseline = await rate(args.issues, args.concurrency, raw_insert)
        issued = await rate(args.issues, args.concurrency, issue)

        to_touch = iter(picked[:args.samples + 5])
        to_revoke = iter(picked[args.samples + 5:])

        async def raw_update() -> None:
            async with engine.begin() as conn:
                await conn.execute(update(keys_table)
                                   .where(keys_table.c.key_id == next(to_touch))
                                   .values(name=keys_table.c.name))

        async def revoke() -> None:
            await service.revoke(next(to_revoke), _ACTOR)

        touched = await latencies(args.samples, raw_update)
        revoked = await latencies(args.samples, revoke)

        async def raw_page(after: int) -> int:
            async with engine.connect() as conn:
                rows = (await conn.execute(
                    select(outbox.c.sequence, outbox.c.body, outbox.c.signature,
                           outbox.c.signing_key)
                    .where(outbox.c.sequence > after).order_by(outbox.c.sequence)
                    .limit(FEED_PAGE))).all()
            return len(rows)

        async def feed_page(after: int) -> int:
            return len((await fetch_feed(engine, after, FEED_PAGE)).events)

        events = min(args.feed, built.events)
        raw_rate = await _read_rate(raw_page, events)
        feed_rate = await _read_rate(feed_page, events)
    finally:
        await engine.dispose()
    revoke_p50, revoke_p99 = percentile(revoked, 50), percentile(revoked, 99)
    update_p50, update_p99 = percentile(touched, 50), percentile(touched, 99)
    return [
        Row(backend, f"issue, service layer, concurrency {args.concurrency}",
            f"{issued:,.0f} issues/s", f"{baseline:,.0f} raw INSERT tx/s",
            f"{issued / baseline:.2f}x ({_verdict(issued >= AIM_ISSUES)}: >= {AIM_ISSUES:.0f}/s)"),
        Row(backend, f"revoke, service layer, one at a time ({args.samples} keys)",
            f"p50 {revoke_p50:.2f} ms, p99 {revoke_p99:.2f} ms",
            f"raw UPDATE tx p50 {update_p50:.2f} ms, p99 {update_p99:.2f} ms",
            f"{revoke_p99 / update_p99:.1f}x "
            f"({_verdict(revoke_p99 <= AIM_REVOKE_P99_MS)}: p99 <= {AIM_REVOKE_P99_MS:.0f} ms)"),
        Row(backend, f"feed read from 0, pages of {FEED_PAGE} ({events:,} events)",
            f"{feed_rate:,.0f} events/s", f"raw SELECT of the rows {raw_rate:,.0f} rows/s",
            f"{feed_rate / raw_rate:.2f}x ({_verdict(feed_rate >= AIM_FEED)}: "
            f">= {AIM_FEED:,.0f}/s)"),
    ]


async def _read_rate(page: Callable[[int], Awaitable[int]], events: int) -> float:
    """Events per second of reading ``events`` events page by page from the start."""
    after, start = 0, time.perf_counter()
    while after < events:
        count = await page(after)
        if count == 0:
            break
        after += count
    return after / (time.perf_counter() - start)


async def _main(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    async with temporary_database("apikeys_bench_") as url:
        rows = await _bench(url, args)
    print_rows("key_service at scale", f"{args.keys:,} keys, {args.issues:,} issues, "
               f"{args.samples} revocations, {time.perf_counter() - began:.0f} s", rows,
               f"issue >= {AIM_ISSUES:.0f}/s at concurrency 16, revoke p99 <= "
               f"{AIM_REVOKE_P99_MS:.0f} ms, feed reads >= {AIM_FEED:,.0f} events/s")


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys (and events) written")
    parser.add_argument("--issues", type=int, default=2000, help="keys issued")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent issuers")
    parser.add_argument("--samples", type=int, default=300, help="revocations timed")
    parser.add_argument("--feed", type=int, default=200_000, help="feed events read")
    args = parser.parse_args()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
