"""The JavaScript subscriber (examples/node-subscriber), written from docs/events.md alone, against
the real RabbitMQ and key_service: it verifies with the published keys, reads the subscriber feed
with an events:read token, applies every event once in order, fills a gap, and refuses forgeries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest

from apikeys_shared import Event, SignedEvent, Signer
from apikeys_shared.config import generate_secrets
from tests.conftest import AmqpNames
from tests.integration.running.test_subscriber import (
    _admin,
    _issue,
    _key_service,
    _publish,
    _record,
    _revoke,
)
from tests.support.procs import ROOT

pytestmark = pytest.mark.rabbitmq

EXAMPLE = ROOT / "examples" / "node-subscriber"
TIMEOUT = 20.0


@dataclass
class NodeSubscriber:
    """The subscriber as a running ``node`` process."""

    proc: asyncio.subprocess.Process
    log: list[str]

    async def until_logged(self, text: str) -> None:
        """Wait until its log says ``text``."""
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while text not in "".join(self.log):
            assert self.proc.returncode is None, "".join(self.log)
            assert asyncio.get_running_loop().time() < deadline, "".join(self.log)
            await asyncio.sleep(0.02)

    async def next_event(self) -> dict[str, Any]:
        """The next JSON line it prints."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        assert line, "".join(self.log)
        event: dict[str, Any] = json.loads(line)
        return event


@contextlib.asynccontextmanager
async def _node(env: dict[str, str]) -> AsyncIterator[NodeSubscriber]:
    node = shutil.which("node")
    assert node, "Node.js is required (Debian: apt-get install nodejs)"
    assert (EXAMPLE / "node_modules" / "amqplib").is_dir(), (
        "npm ci --prefix examples/node-subscriber (make test does it)")
    proc = await asyncio.create_subprocess_exec(
        node, "subscriber.mjs", cwd=EXAMPLE, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    log: list[str] = []

    async def drain() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            log.append(line.decode(errors="replace"))

    drainer = asyncio.create_task(drain())
    try:
        yield NodeSubscriber(proc, log)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0, "".join(log)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.wait_for(drainer, TIMEOUT)


async def test_the_node_subscriber_follows_key_service(
    tmp_path: Path, amqp_names: AmqpNames, rabbitmq_url: str, sqlite_url: str,
    secrets_env: dict[str, str],
) -> None:
    service_env = {**secrets_env, "KEY_SERVICE_DATABASE_URL": sqlite_url,
                   "KEY_SERVICE_DATA_DIR": str(tmp_path), "RABBITMQ_URL": rabbitmq_url,
                   "APIKEYS_EXCHANGE": amqp_names.exchange}
    queue = amqp_names.queue("node-subscriber")
    with _key_service(tmp_path, service_env) as url:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            admin = await _admin(http, url)
            early = await _issue(http, url, admin, "before the subscriber")  # in the feed only
            async with http.post(f"{url}/api/v1/tokens", headers=admin, json={
                "name": "node subscriber", "scopes": ["events:read"]}) as response:
                assert response.status == 201, await response.text()
                token = (await response.json())["token"]
            env = {"RABBITMQ_URL": rabbitmq_url, "APIKEYS_EXCHANGE": amqp_names.exchange,
                   "APIKEYS_SUBSCRIBER_QUEUE": queue, "KEY_SERVICE_URL": url,
                   "APIKEYS_TOKEN": token}
            async with _node(env) as subscriber:
                replayed = await subscriber.next_event()
                await subscriber.until_logged("listening on queue")
                live = await _issue(http, url, admin, "while it listens")
                issued = await subscriber.next_event()
                # A forgery on the exchange: well formed, signed, but not by key_service.
                forger = Signer.from_base64(generate_secrets()["APIKEYS_SIGNING_KEY"])
                forged = Event.for_record(_record(secrets_env), sequence=3,
                                          source="urn:apikeys:key_service")
                await _publish(rabbitmq_url, amqp_names.exchange,
                               [SignedEvent.sign(forged, forger)])
                await subscriber.until_logged("does not verify")
                # A gap: the queue misses the revocation (unbound while it is published).
                connection = await aio_pika.connect(rabbitmq_url, timeout=10)
                async with connection:
                    channel = await connection.channel()
                    bound = await channel.get_queue(queue)
                    probe = await channel.declare_queue(exclusive=True)  # sees it go by
                    await probe.bind(amqp_names.exchange, "key.revoked")
                    for key in ("key.issued", "key.rolled", "key.revoked"):
                        await bound.unbind(amqp_names.exchange, key)
                    await _revoke(http, url, admin, live)
                    async with probe.iterator(timeout=TIMEOUT) as published:
                        await anext(published)  # the relay has published it, past our queue
                    for key in ("key.issued", "key.rolled", "key.revoked"):
                        await bound.bind(amqp_names.exchange, key)
                await _revoke(http, url, admin, early)
                revoked = await subscriber.next_event()
                revoked_early = await subscriber.next_event()
    assert [(e["key_id"], e["type"], e["sequence"], e["status"]) for e in (
        replayed, issued, revoked, revoked_early)] == [
        (early, "apikey.issued", "1", "active"), (live, "apikey.issued", "2", "active"),
        (live, "apikey.revoked", "3", "revoked"), (early, "apikey.revoked", "4", "revoked"),
    ]
    assert replayed["name"] == "before the subscriber"
    log = "".join(subscriber.log)
    assert "events 3 to 3 were missed: reading the feed" in log
    assert log.count("does not verify") == 1


def test_the_readme_lists_the_subscribers_settings_as_the_code_reads_them() -> None:
    code = (EXAMPLE / "subscriber.mjs").read_text()
    read = dict(re.findall(r'setting\("([A-Z_]+)"(?:, "([^"]*)")?\)', code))
    readme = (EXAMPLE / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", readme, re.M))
    assert {name: (f"`{d}`" if d else "required") for name, d in read.items()} == {
        name: shown.strip() for name, shown in rows.items()}
