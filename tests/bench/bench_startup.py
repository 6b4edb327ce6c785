"""Benchmark of a gateway process's start-up against a long key history (not a test).

Run: ``python -m tests.bench.bench_startup [--keys N] [--revoked N]`` (``make bench`` runs it
with a history of 1,000,000 events: 500,000 keys issued, then all of them revoked).

Two stacks of our own processes (key_service on SQLite, 1-worker gateways, the local Redis and
RabbitMQ under names of this run): one with an empty history, the baseline, and one whose
history is written straight into its database by key_service's own code (``history``). On the
second, three gateway processes start one after the other: the first when nothing is cached
(started once key_service is ready, which waits for its first revocation snapshot), the second
from the copy the first left in Redis, the third after that copy is deleted (key_service serves
the snapshot it made). Each figure is the time from spawning the process to its ``/readyz``
answering 200, with the process's resident memory once ready and what it read: the snapshot's
size, and the feed events applied. key_service's own start is reported beside them.

Aim (issue 17): ready in at most 2 s with 1,000,000 events of history, reading from key_service
an amount of data that grows with the revoked keys, not with the events.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis

from key_service.config import KeyServiceConfig
from tests.support.procs import free_port

from .cpu import rss_mib
from .history import History, build_history
from .metrics import metric
from .stack import BenchStack

__all__ = ["main"]

AIM_SECONDS = 2.0


@dataclass(frozen=True)
class Start:
    """One gateway process's start."""

    label: str
    seconds: float
    rss_mib: float
    feed_events: float
    snapshot: str


def _start(stack: BenchStack, routes: Path, label: str) -> Start:
    started = time.perf_counter()
    port, proc = stack.start_gateway(routes, workers=1, name=label, ready_timeout=900)
    seconds = time.perf_counter() - started
    rss = sum(rss_mib([proc.proc.pid]).values())  # the supervisor and its worker
    feed = metric(port, "gateway_events_total", source="feed", outcome="applied")
    used = [source for source in ("redis", "key_service")
            if metric(port, "gateway_snapshots_total", source=source, outcome="used")]
    stack.stop_process(proc)
    return Start(label, seconds, rss, feed, used[0] if used else "none (whole feed)")


def _snapshot_bytes(stack: BenchStack) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.key_service_port}/internal/v1/snapshot",
        headers={"Authorization": f"Bearer {stack.secrets['APIKEYS_INTERNAL_TOKEN']}"},
    )
    with urllib.request.urlopen(request, timeout=300) as resp:
        return len(resp.read())


def _build(keys: int, revoked: int,
           out: list[History]) -> Callable[[KeyServiceConfig], None]:
    def build(config: KeyServiceConfig) -> None:
        out.append(asyncio.run(build_history(
            config, keys=keys, revoked=revoked,
            progress=lambda line: print(f"  history: {line}", file=sys.stderr, flush=True),
        )))
    return build


def run(args: argparse.Namespace) -> list[str]:
    """Measure, and return the Markdown lines."""
    with BenchStack() as empty:
        empty.start_key_service()
        routes = empty.write_routes(free_port())
        baseline = _start(empty, routes, "empty history")
        empty_ready = empty.key_service_start_seconds
    history: list[History] = []
    with BenchStack() as stack:
        print(f"  writing a history of {args.keys + args.revoked:,} events…", file=sys.stderr,
              flush=True)
        stack.start_key_service(before_serve=_build(args.keys, args.revoked, history))
        stack_ready = stack.key_service_start_seconds
        routes = stack.write_routes(free_port())
        cold = _start(stack, routes, "first process, nothing cached")
        from_redis = _start(stack, routes, "next process, Redis's copy")
        client = redis.Redis.from_url(stack.redis_url)
        try:
            client.delete(f"{stack.redis_prefix}snapshot")
        finally:
            client.close()
        warm = _start(stack, routes, "Redis's copy deleted")
        size = _snapshot_bytes(stack)
    (built,) = history
    starts = [baseline, cold, from_redis, warm]
    worst = max(cold.seconds, from_redis.seconds, warm.seconds)
    verdict = "met" if worst <= AIM_SECONDS else "not met"
    lines = [
        "## Gateway start-up against a long history",
        "",
        f"History: {built.events:,} events ({args.keys:,} keys issued, {built.revoked:,} of them "
        f"revoked), written in {built.seconds:.0f} s. Each row: one 1-worker gateway process, "
        "from spawn to `/readyz` 200.",
        "",
        "| start | seconds | ratio to empty history | RSS MiB | feed events read | snapshot from |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for start in starts:
        lines.append(
            f"| {start.label} | {start.seconds:.2f} | {start.seconds / baseline.seconds:.2f} | "
            f"{start.rss_mib:.0f} | {start.feed_events:,.0f} | {start.snapshot} |")
    lines += [
        "",
        f"key_service: ready {stack_ready:.2f} s after spawning with this history, "
        f"{empty_ready:.2f} s with an empty one (its `/readyz` waits for its first revocation "
        "snapshot, so the first gateway process, started once it is ready, does not).",
        "",
        f"Snapshot: {size:,} bytes for {args.keys:,} keys, {built.revoked:,} of them revoked "
        f"({size / max(args.keys, 1):.1f} bytes a key).",
        "",
        "| aim | measured | target | verdict |",
        "| --- | ---: | ---: | --- |",
        f"| ready with {built.events:,} events of history (slowest of the three) | "
        f"{worst:.2f} s | ≤ {AIM_SECONDS:.0f} s | {verdict} |",
        "",
    ]
    return lines


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=500_000, help="keys in the history")
    parser.add_argument("--revoked", type=int, default=500_000,
                        help="of them revoked (events = keys + revoked)")
    args = parser.parse_args()
    args.revoked = min(args.revoked, args.keys)
    print(f"`python -m tests.bench.bench_startup --keys {args.keys} --revoked {args.revoked}` "
          f"on {platform.node()} ({os.cpu_count()} cores), "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print("\n".join(run(args)), flush=True)


if __name__ == "__main__":
    main()
