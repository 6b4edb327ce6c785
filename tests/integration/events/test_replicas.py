"""Two key_service processes on one PostgreSQL database: one publisher, every event once, in
order, and a clean hand-over when the publishing one stops."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from key_service.db import create_engine, make_sessionmaker, migrate_async
from key_service.users import ADMIN_ROLE, create_user
from tests.conftest import AmqpNames
from tests.support.procs import ServiceProcess, free_port, wait_http

from .conftest import ADMIN_PASSWORD, Subscriber, eventually

_PUBLISHED = re.compile(r"^key_service_events_published_total (\S+)$", re.MULTILINE)


@contextlib.contextmanager
def _replica(
    tmp_path: Path, env: dict[str, str], name: str,
) -> Iterator[tuple[str, ServiceProcess]]:
    port = free_port()
    proc = ServiceProcess(["-m", "key_service", "serve", "--port", str(port)], env,
                          tmp_path / f"{name}.log")
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/readyz", timeout=60)
        except TimeoutError as exc:
            raise AssertionError(proc.output()) from exc
        yield url, proc
    finally:
        proc.stop()


class _Admin:
    """An administrator's HTTP session with one replica."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def login(self) -> None:
        async with self.session.post(f"{self.url}/api/v1/session", json={
            "username": "admin", "password": ADMIN_PASSWORD,
        }) as resp:
            assert resp.status == 200, await resp.text()
            self.csrf = (await resp.json())["csrf_token"]

    async def issue(self, name: str) -> str:
        async with self.session.post(f"{self.url}/api/v1/keys", json={"name": name},
                                     headers={"X-CSRF-Token": self.csrf}) as resp:
            assert resp.status == 201, await resp.text()
            key_id: str = (await resp.json())["key_id"]
            return key_id

    async def revoke(self, key_id: str) -> None:
        async with self.session.post(f"{self.url}/api/v1/keys/{key_id}/revoke",
                                     headers={"X-CSRF-Token": self.csrf}) as resp:
            assert resp.status == 200, await resp.text()

    async def published(self) -> float:
        async with self.session.get(f"{self.url}/metrics") as resp:
            match = _PUBLISHED.search(await resp.text())
            assert match is not None
            return float(match.group(1))


async def _total_published(admins: list[_Admin], total: float) -> bool:
    return sum([await admin.published() for admin in admins]) >= total


@pytest.mark.slow
async def test_two_processes_publish_each_event_once_in_order_and_hand_over(
    tmp_path: Path, postgres_url: str, secrets_env: dict[str, str], amqp_names: AmqpNames,
    rabbitmq_url: str, subscriber: Subscriber,
) -> None:
    await migrate_async(postgres_url)
    engine = create_engine(postgres_url)
    try:
        await create_user(make_sessionmaker(engine), "admin", ADMIN_PASSWORD, ADMIN_ROLE)
    finally:
        await engine.dispose()
    env = {
        **secrets_env, "KEY_SERVICE_DATABASE_URL": postgres_url,
        "KEY_SERVICE_DATA_DIR": str(tmp_path), "RABBITMQ_URL": rabbitmq_url,
        "APIKEYS_EXCHANGE": amqp_names.exchange,
    }
    with _replica(tmp_path, env, "a") as (url_a, proc_a), _replica(tmp_path, env, "b") as (
        url_b, proc_b,
    ):
        admins = [_Admin(url_a), _Admin(url_b)]
        try:
            for admin in admins:
                await admin.login()

            async def work(admin: _Admin, other: _Admin, n: int) -> None:
                for i in range(n):
                    key_id = await admin.issue(f"{admin.url} {i}")
                    if i % 2 == 0:
                        # Revoked through the other replica: the two events of one key come
                        # from different processes.
                        await other.revoke(key_id)

            await asyncio.gather(work(admins[0], admins[1], 60), work(admins[1], admins[0], 60))
            await subscriber.wait_for(180)
            # The counter follows the confirms (recorded per batch): wait for it to settle.
            await eventually(lambda: _total_published(admins, 180))
            counts = [await admin.published() for admin in admins]
            # Only one process published; together they published each event once.
            assert sorted(counts) == [0, 180], counts

            # Stop the publisher cleanly: the other one must take over, in order, without
            # publishing again what the first one already had confirmed.
            publisher = 0 if counts[0] else 1
            (proc_a, proc_b)[publisher].stop()
            for i in range(20):
                await admins[1 - publisher].issue(f"after the hand-over {i}")
            await subscriber.wait_for(200)
            await asyncio.sleep(0.5)  # a duplicate, if any, would arrive by now
        finally:
            for admin in admins:
                await admin.session.close()
    ids = [r.event.id for r in subscriber.received]
    assert len(ids) == len(set(ids)) == 200
    assert [r.event.sequence for r in subscriber.received] == list(range(1, 201))
