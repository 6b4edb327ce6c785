"""Benchmark of the Backoffice key list at scale (not a test): the API's list and search, and the
first rows of the Manage API Keys page in a real Chromium.

Run: ``python -m tests.bench.bench_key_list [--keys N] [--page-keys N] [--samples N]``

* List latency: ``KeyService.list(50)`` without and with ``q`` over ``--keys`` keys on
  PostgreSQL (and on SQLite with ``--backends``), the keys built in the database through
  key_service's own migrations and model (not through the API). The searches: a common word,
  a rare name fragment, a key ID prefix, a fragment found nowhere, and (reported apart, as the
  known worst case) a two-character fragment found nowhere, which no trigram can serve. The
  baseline is a bare ``SELECT 1`` round trip on the same engine.
* First rows: a key_service process (``python -m key_service serve``) on a SQLite file holding
  ``--page-keys`` keys; Playwright drives Debian's Chromium to the Manage API Keys page and
  times from the navigation to the first key row being visible. The baseline is the same page
  holding 100 keys, in the same run.

Aims from the issue: list p95 <= 20 ms at 1,000,000 keys on PostgreSQL; first rows <= 1 s at
100,000 keys.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from sqlalchemy import Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from apikeys_shared.config import generate_secrets, generate_secrets_env
from apikeys_shared.keys import new_key_id
from key_service.config import load_config
from key_service.db import create_engine, make_sessionmaker, migrate, migrate_async
from key_service.keys import KeyService
from key_service.models import ApiKey
from tests.bench.stats import percentile
from tests.bench.table import Row, latencies, print_rows
from tests.support.procs import ServiceProcess, free_port, wait_http
from tests.support.services import temporary_database

_SERVICES = [
    "billing", "shipping", "reporting", "invoices", "payments", "search", "catalog", "orders",
    "inventory", "analytics", "notifications", "identity", "partner", "exports", "imports",
    "ledger", "pricing", "checkout", "support", "marketing", "gateway",
]  # 21 of them: every name comes with active and revoked keys (a tenth are revoked)
_ENVIRONMENTS = ["production", "staging", "development", "sandbox"]
_BATCH = 10_000
_ADMIN = ("bench.admin", "a long benchmark password")


def _name(n: int) -> str:
    return (f"{_SERVICES[n % len(_SERVICES)]} {_ENVIRONMENTS[n // 7 % len(_ENVIRONMENTS)]} "
            f"key {n}")


async def build_keys(engine: AsyncEngine, count: int) -> None:
    """``count`` keys in key_service's ``api_keys`` table, issued a second apart, a tenth of
    them revoked, inserted in large batches (the database's own, not through the API)."""
    table = cast(Table, ApiKey.__table__)
    start = datetime.now(UTC) - timedelta(seconds=count + 10)
    batch: list[dict[str, object]] = []
    for n in range(count):
        issued = start + timedelta(seconds=n)
        revoked = n % 10 == 0
        batch.append({
            "key_id": new_key_id(), "name": _name(n), "secret_hash": f"{n:064x}",
            "hash_version": "p1", "status": "revoked" if revoked else "active",
            "issued_at": issued, "revoked_at": issued + timedelta(hours=1) if revoked else None,
            "issued_by": None, "revoked_by": None,
        })
        if len(batch) == _BATCH or n == count - 1:
            async with engine.begin() as conn:
                await conn.execute(insert(table), batch)
            batch = []


async def _bench_list(backend: str, url: str, args: argparse.Namespace) -> list[Row]:
    await migrate_async(url)
    engine = create_engine(url, pool_size=5)
    rows: list[Row] = []
    try:
        began = time.perf_counter()
        await build_keys(engine, args.keys)
        async with engine.begin() as conn:
            if backend == "PostgreSQL":
                await conn.execute(text("ANALYZE api_keys"))
            else:
                await conn.execute(text("ANALYZE"))
            some_id = (await conn.execute(
                select(ApiKey.key_id).order_by(ApiKey.issued_at).offset(args.keys // 3).limit(1)
            )).scalar_one()
        built = time.perf_counter() - began
        print(f"{backend}: {args.keys:,} keys built in {built:.0f} s", flush=True)
        with tempfile.TemporaryDirectory(prefix="apikeys-bench-") as data:
            peppers = load_config({
                **generate_secrets(), "KEY_SERVICE_DATABASE_URL": url,
                "KEY_SERVICE_DATA_DIR": data,
            }).secrets.peppers
        service = KeyService(make_sessionmaker(engine), peppers)

        async def select_one() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        ping50 = percentile(await latencies(args.samples, select_one), 50)
        searches = {
            "no q (first page)": None,
            "q = a common word ('billing', 1 key in 21)": "billing",
            f"q = a rare fragment ('key {args.keys // 2}')": f"key {args.keys // 2}",
            "q = a key ID prefix (18 characters)": some_id[:18],
            "q = a fragment found nowhere ('zebra')": "zebra",
        }
        mixed: list[float] = []
        for label, q in searches.items():
            samples = await latencies(args.samples, lambda q=q: service.list(50, None, q))
            if q is not None:
                mixed += samples
            rows.append(_latency_row(backend, f"list, {label}", samples, ping50))
        rows.append(_latency_row(backend, "list with q, the four searches together", mixed,
                                 ping50))
        worst = await latencies(max(5, args.samples // 10),
                                 lambda: service.list(50, None, "zq"))
        rows.append(_latency_row(
            backend, "list, q = two letters found nowhere ('zq': no trigram, reads every key)",
            worst, ping50))
    finally:
        await engine.dispose()
    return rows


def _latency_row(backend: str, what: str, samples: list[float], ping50: float) -> Row:
    p50, p95 = percentile(samples, 50), percentile(samples, 95)
    return Row(backend, what, f"p50 {p50:.2f} ms, p95 {p95:.2f} ms",
               f"SELECT 1 p50 {ping50:.2f} ms", f"{p95 / ping50:.1f}x")


# -- the page ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _key_service(workdir: Path, keys: int) -> Iterator[str]:
    """A key_service process on a SQLite file holding ``keys`` keys and an administrator."""
    from tests.browser.support import run_cli

    data = workdir / f"ks{keys}"
    data.mkdir()
    env = {
        **dict(line.split("=", 1) for line in generate_secrets_env().splitlines()
               if line and not line.startswith("#")),
        "KEY_SERVICE_DATA_DIR": str(data),
        "KEY_SERVICE_DATABASE_URL": f"sqlite+aiosqlite:///{data / 'keys.db'}",
    }
    migrate(env["KEY_SERVICE_DATABASE_URL"])

    async def fill() -> None:
        engine = create_engine(env["KEY_SERVICE_DATABASE_URL"])
        try:
            await build_keys(engine, keys)
        finally:
            await engine.dispose()

    asyncio.run(fill())
    run_cli(["create-admin", "--username", _ADMIN[0], "--password-stdin"], env, _ADMIN[1] + "\n")
    port = free_port()
    process = ServiceProcess(
        ["-m", "key_service", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env, workdir / f"key_service{keys}.log",
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


def _first_rows(base_url: str, samples: int) -> list[float]:
    """Milliseconds from navigating to the Manage API Keys page to its first key row shown."""
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS

    out: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base_url + "/backoffice/login")
            page.get_by_label("Username").fill(_ADMIN[0])
            page.get_by_label("Password").fill(_ADMIN[1])
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(base_url + "/backoffice/")
            first = page.locator("#keys-body tr[data-key-id]").first
            for n in range(samples + 2):
                began = time.perf_counter()
                page.goto(base_url + "/backoffice/settings/api-keys")
                first.wait_for(state="visible", timeout=60_000)
                if n >= 2:  # two warm-up navigations
                    out.append((time.perf_counter() - began) * 1000)
        finally:
            browser.close()
    return out


def _bench_page(args: argparse.Namespace) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="apikeys-bench-page-") as tmp:
        with _key_service(Path(tmp), 100) as small_url:
            small = _first_rows(small_url, args.page_samples)
        with _key_service(Path(tmp), args.page_keys) as big_url:
            big = _first_rows(big_url, args.page_samples)
    small50 = percentile(small, 50)
    return [Row(
        "SQLite", f"Manage API Keys: navigation to first row shown, {args.page_keys:,} keys",
        f"p50 {percentile(big, 50):.0f} ms, max {max(big):.0f} ms",
        f"100 keys: p50 {small50:.0f} ms", f"{percentile(big, 50) / small50:.2f}x",
    )]


def _print(rows: list[Row], args: argparse.Namespace, seconds: float) -> None:
    print()
    print_rows("key list benchmark",
               f"{args.keys:,} keys listed, {args.samples} samples, {seconds:.0f} s", rows,
               "list p95 <= 20 ms at 1,000,000 keys on PostgreSQL (with and without q); "
               "first rows <= 1 s at 100,000 keys")


async def _lists(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    if "postgres" in args.backends:
        async with temporary_database("apikeys_bench_") as pg_url:
            rows += await _bench_list("PostgreSQL", pg_url, args)
    if "sqlite" in args.backends:
        with tempfile.TemporaryDirectory(prefix="apikeys-bench-") as tmp:
            rows += await _bench_list(
                "SQLite", f"sqlite+aiosqlite:///{Path(tmp) / 'keys.db'}", args)
    return rows


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys to list and search")
    parser.add_argument("--samples", type=int, default=200, help="latency samples per figure")
    parser.add_argument("--backends", default="postgres",
                        help="comma-separated: postgres, sqlite (the list part)")
    parser.add_argument("--page-keys", type=int, default=100_000,
                        help="keys behind the Manage API Keys page")
    parser.add_argument("--page-samples", type=int, default=10, help="navigations timed")
    parser.add_argument("--parts", default="list,page", help="comma-separated: list, page")
    args = parser.parse_args()
    args.backends = {b.strip() for b in args.backends.split(",")}
    parts = {p.strip() for p in args.parts.split(",")}
    began = time.perf_counter()
    rows: list[Row] = []
    if "list" in parts:
        rows += asyncio.run(_lists(args))
    if "page" in parts:
        rows += _bench_page(args)
    _print(rows, args, time.perf_counter() - began)


if __name__ == "__main__":
    main()
