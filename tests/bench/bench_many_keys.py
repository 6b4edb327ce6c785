"""Benchmark of one gateway process serving many keys in rotation (not a test).

Run: ``python -m tests.bench.bench_many_keys [--keys N]`` (``make bench`` runs it with 100,000).

Our own key_service (SQLite) holding ``--keys`` active keys, each with a secret of its own,
written straight into its database by key_service's own code (``history.build_keys``), and
Redis holding each key's signed record as gateways leave it there once they have applied the
key's ``issued`` event (taken from key_service's feed); nginx as the upstream; one 1-worker
gateway with its default settings. First every key is sent once (its first use in the
process: read from Redis and verified), then three setups are measured in interleaved rounds,
all through one wrk script that sends the next pair of a file of keys with every request
(``wrk.rotating_lua``), so that wrk's per-request Lua cost is in every row: the open route (no
key needed, the same headers sent), one key, and every key in turn. Reported beside them: the
gateway's CPU time per request, its L1 misses from the warm-ups on, and the resident memory of each
of its processes at the end.

Aims (issue 17): every key in turn at ≥ 0.8 times the one-key rate, each gateway process ≤ 256 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from auth_gateway.credentials import ID_HEADER, SECRET_HEADER
from auth_gateway.keystore import redis_key
from key_service.config import KeyServiceConfig
from key_service.db import create_engine
from key_service.outbox import fetch_feed
from tests.support.procs import free_port

from .cpu import rss_mib
from .history import build_keys
from .metrics import metric
from .nginx import upstream_server
from .stack import BenchStack
from .throughput import LoadSettings, Scenario, measure_all

__all__ = ["main"]

AIM_RATIO = 0.8
AIM_RSS_MIB = 256.0
OPEN = "open route (no key), same script"
ONE = "one key"
_FEED_PAGE = 5000


async def _first_uses(url: str, pairs: Sequence[tuple[str, str]],
                      concurrency: int) -> Counter[int]:
    """Send every pair once, ``concurrency`` at a time; the statuses answered."""
    statuses: Counter[int] = Counter()
    queue = iter(pairs)

    async def worker(session: aiohttp.ClientSession) -> None:
        for key_id, secret in queue:
            async with session.get(url, headers={ID_HEADER: key_id,
                                                 SECRET_HEADER: secret}) as resp:
                await resp.read()
                statuses[resp.status] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return statuses


async def _records_to_redis(config: KeyServiceConfig, url: str, prefix: str) -> None:
    """Every key's newest signed record from key_service's feed, into Redis where the gateways
    of ``prefix`` keep it."""
    engine = create_engine(config.database_url)
    client = aioredis.from_url(url)
    try:
        after = 0
        while True:
            page = await fetch_feed(engine, after, _FEED_PAGE)
            if not page.events:
                break
            await client.mset({
                redis_key(prefix, json.loads(signed.body)["data"]["key_id"]): signed.to_text()
                for signed in page.events
            })
            after += len(page.events)  # the feed is dense
    finally:
        await client.aclose()
        await engine.dispose()


def _write_pairs(path: Path, pairs: Sequence[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{key_id} {secret}\n" for key_id, secret in pairs))
    return path


def run(args: argparse.Namespace) -> list[str]:
    """Measure, and return the Markdown lines."""
    pairs: list[tuple[str, str]] = []

    def build(config: KeyServiceConfig) -> None:
        pairs.extend(asyncio.run(build_keys(config, keys=args.keys)))
        asyncio.run(_records_to_redis(config, stack.redis_url, stack.redis_prefix))

    many = f"{args.keys:,} keys in turn"
    with BenchStack() as stack:
        print(f"  writing {args.keys:,} keys…", file=sys.stderr, flush=True)
        stack.start_key_service(before_serve=build)
        upstream_port = free_port()
        stack.start_nginx("upstream", upstream_server(upstream_port), [upstream_port], workers=1)
        routes = stack.write_routes(upstream_port)
        port, gateway = stack.start_gateway(routes, workers=1, name="many-keys")
        auth_url = f"http://127.0.0.1:{port}/auth/bench"
        print(f"  first use of each of {args.keys:,} keys…", file=sys.stderr, flush=True)
        started = time.perf_counter()
        statuses = asyncio.run(_first_uses(auth_url, pairs, concurrency=32))
        first_seconds = time.perf_counter() - started
        if statuses != Counter({200: len(pairs)}):
            raise RuntimeError(f"the first use of the keys was answered {dict(statuses)}")
        many_file = _write_pairs(stack.dir / "many.keys", pairs)
        one_file = _write_pairs(stack.dir / "one.key", pairs[:1])
        scenarios = [
            Scenario(OPEN, f"http://127.0.0.1:{port}/open/bench", {}, many_file),
            Scenario(ONE, auth_url, {}, one_file),
            Scenario(many, auth_url, {}, many_file),
        ]
        settings = LoadSettings(duration_s=args.seconds, rounds=args.rounds, warmup_s=2)
        misses_before = metric(port, "gateway_cache_lookups_total", tier="l1", result="miss")
        results = measure_all(scenarios, settings, stack.dir / "wrk",
                              cpu_roots=[gateway.proc.pid])
        misses = metric(port, "gateway_cache_lookups_total", tier="l1", result="miss") \
            - misses_before
        rss = rss_mib([gateway.proc.pid])
    ratio = results[many].rps / results[ONE].rps
    biggest = max(rss.values())
    lines = [
        "## Many keys in rotation",
        "",
        f"{args.keys:,} active keys, each with its own secret, one 1-worker gateway with its "
        f"default settings. First use of every key in the process (its record read from Redis "
        f"and verified), 32 at a time: {first_seconds:.1f} s "
        f"({len(pairs) / first_seconds:,.0f} keys/s). Then {settings.rounds} interleaved rounds "
        f"of {settings.duration_s // settings.rounds} s per row, wrk with "
        f"{settings.connections} connections and one script sending the next key of a file "
        "with every request.",
        "",
        "| setup | requests/s | ratio to one key | p50 ms | p99 ms | gateway CPU µs/request "
        "| errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario in scenarios:
        result = results[scenario.label]
        lines.append(
            f"| {scenario.label} | {result.rps:,.0f} | {result.rps / results[ONE].rps:.2f} | "
            f"{result.p50_ms:.2f} | {result.p99_ms:.2f} | {result.cpu_us_per_request:.0f} | "
            f"{result.errors:,} |")
    lines += [
        "",
        f"L1 misses in the warm-ups and measured rounds: {misses:,.0f}. Resident memory of "
        f"the gateway's process{'es' if len(rss) > 1 else ''} at the end: "
        + ", ".join(f"{mib:.0f} MiB" for _, mib in sorted(rss.items())) + ".",
        "",
        "| aim | measured | target | verdict |",
        "| --- | ---: | ---: | --- |",
        f"| {many} against one key, requests/s | {ratio:.2f} | ≥ {AIM_RATIO} | "
        f"{'met' if ratio >= AIM_RATIO else 'not met'} |",
        f"| resident memory of the largest gateway process, MiB | {biggest:.0f} | "
        f"≤ {AIM_RSS_MIB:.0f} | {'met' if biggest <= AIM_RSS_MIB else 'not met'} |",
        "",
    ]
    return lines


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000, help="active keys used in turn")
    parser.add_argument("--seconds", type=int, default=30, help="measured seconds per row")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds")
    args = parser.parse_args()
    if args.keys < 1:
        parser.error("--keys must be at least 1")
    print(f"`python -m tests.bench.bench_many_keys --keys {args.keys}` on {platform.node()} "
          f"({os.cpu_count()} cores), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print("\n".join(run(args)), flush=True)


if __name__ == "__main__":
    main()
