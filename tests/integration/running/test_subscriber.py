"""The example subscriber (examples/subscriber.py), run as a program against the real RabbitMQ."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiohttp import web

from apikeys_shared import Event, KeyRecord, PepperSet, SignedEvent, Signer
from apikeys_shared.config import generate_secrets
from apikeys_shared.keys import generate_secret, new_key_id
from tests.conftest import AmqpNames
from tests.support.procs import ROOT, ServiceProcess, free_port, wait_http

pytestmark = pytest.mark.rabbitmq

SUBSCRIBER = ROOT / "examples" / "subscriber.py"
TIMEOUT = 20.0
ADMIN_PASSWORD = "correct horse battery staple"


@dataclass
class Subscriber:
    """The example subscriber as a running subprocess."""

    proc: asyncio.subprocess.Process
    log: list[str]
    ready: asyncio.Event
    drain: asyncio.Task[None]

    async def consuming(self) -> None:
        """Wait until it says it listens on its queue."""
        await _ready(self.ready, self.drain, self.log)

    async def next_event(self) -> dict[str, Any]:
        """The next JSON line it prints on stdout."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        assert line, f"subscriber exited early; its log:\n{''.join(self.log)}"
        event: dict[str, Any] = json.loads(line)
        return event


async def _ready(ready: asyncio.Event, drain: asyncio.Task[None], log: list[str]) -> None:
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({waiter, drain}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    assert ready.is_set(), f"subscriber did not start consuming; its log:\n{''.join(log)}"


async def _drain(stream: asyncio.StreamReader, log: list[str], ready: asyncio.Event) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace")
        log.append(text)
        if "listening on queue" in text:
            ready.set()


SUBSCRIBER_TOKEN = "ksmt_" + "0" * 32 + "_" + "x" * 49  # what the stand-in feed accepts


@dataclass
class FeedStandIn:
    """key_service's ``GET /api/v1/events`` over a list the test controls (``down``: 503), and
    its ``GET /api/v1/verify-keys`` publishing ``verify_keys``."""

    verify_keys: list[str]
    events: list[SignedEvent]
    token: str = SUBSCRIBER_TOKEN
    down: bool = False
    reads: int = 0
    key_reads: int = 0

    async def _verify_keys(self, _request: web.Request) -> web.Response:
        self.key_reads += 1
        if self.down:
            return web.json_response({"title": "Service Unavailable"}, status=503)
        return web.json_response({"keys": [
            {"fingerprint": "", "public_key": key, "algorithm": "Ed25519", "current": False}
            for key in self.verify_keys]})

    async def _events(self, request: web.Request) -> web.Response:
        self.reads += 1
        if self.down:
            return web.json_response({"title": "Service Unavailable"}, status=503)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"title": "Unauthorized"}, status=401)
        after = int(request.query["after"])
        chosen = [e for e in self.events if Event.from_bytes(e.body).sequence > after]
        last = max((Event.from_bytes(e.body).sequence for e in self.events), default=0)
        return web.json_response({"events": [e.to_json() for e in chosen],
                                  "last_sequence": last})

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_get("/api/v1/events", self._events)
        app.router.add_get("/api/v1/verify-keys", self._verify_keys)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def run_subscriber(env: dict[str, str], *,
                         wait_ready: bool = True) -> AsyncIterator[Subscriber]:
    """Start the subscriber, wait until it consumes, stop it with SIGINT afterwards."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SUBSCRIBER), cwd=ROOT, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    log: list[str] = []
    ready = asyncio.Event()
    drain = asyncio.create_task(_drain(proc.stderr, log, ready))
    try:
        if wait_ready:
            await _ready(ready, drain, log)
        yield Subscriber(proc, log, ready, drain)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0, "".join(log)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.wait_for(drain, TIMEOUT)


def _secrets() -> dict[str, str]:
    return generate_secrets()


def _env(names: AmqpNames, rabbitmq_url: str, key_service_url: str,
         token: str = SUBSCRIBER_TOKEN, **extra: str) -> dict[str, str]:
    """The subscriber's environment: the test's broker names, key_service, a token."""
    return {
        "RABBITMQ_URL": rabbitmq_url, "APIKEYS_EXCHANGE": names.exchange,
        "APIKEYS_SUBSCRIBER_QUEUE": names.queue("subscriber"),
        "KEY_SERVICE_URL": key_service_url, "APIKEYS_TOKEN": token, **extra,
    }


def _record(secrets: dict[str, str]) -> KeyRecord:
    version, _, pepper = secrets["APIKEYS_PEPPERS"].partition(":")
    peppers = PepperSet(current=version, peppers={version: base64.b64decode(pepper)})
    key_id = new_key_id()
    secret_hash, hash_version = peppers.hash(key_id, generate_secret())
    return KeyRecord(
        key_id=key_id, name="billing export", status="active",
        issued_at=datetime.now(UTC), revoked_at=None,
        secret_hash=secret_hash, hash_version=hash_version,
    )


async def _publish(rabbitmq_url: str, exchange_name: str, signed: list[SignedEvent]) -> None:
    """Publish as key_service's relay does: persistent, mandatory, confirmed, signed headers."""
    connection = await aio_pika.connect(rabbitmq_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True,
        )
        for item in signed:
            event = Event.from_bytes(item.body)
            await exchange.publish(
                aio_pika.Message(
                    item.body, headers=dict(item.amqp_headers),
                    content_type="application/cloudevents+json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=event.id,
                ),
                routing_key=event.routing_key, mandatory=True, timeout=10,
            )
        await channel.close()


async def test_subscriber_takes_a_roll_on_its_own_routing_key(
    amqp_names: AmqpNames, rabbitmq_url: str,
) -> None:
    secrets = _secrets()
    signer = Signer.from_base64(secrets["APIKEYS_SIGNING_KEY"])
    feed = FeedStandIn([secrets["APIKEYS_VERIFY_KEYS"]], [])
    record = _record(secrets)
    revokes_at = record.issued_at + timedelta(hours=24)
    rolled = Event.for_record(
        replace(record, revokes_at=revokes_at, replaced_by=new_key_id()), sequence=1,
        source="urn:apikeys:key_service",
    )
    assert rolled.routing_key == "key.rolled"
    async with feed.serving() as feed_url, run_subscriber(
        _env(amqp_names, rabbitmq_url, feed_url),
    ) as subscriber:
        await _publish(rabbitmq_url, amqp_names.exchange, [SignedEvent.sign(rolled, signer)])
        line = await subscriber.next_event()
    assert (line["type"], line["sequence"], line["status"]) == ("apikey.rolled", 1, "active")
    assert line["revokes_at"] == revokes_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_subscriber_verifies_and_applies_issue_then_revoke_once(
    amqp_names: AmqpNames, rabbitmq_url: str,
) -> None:
    secrets = _secrets()
    signer = Signer.from_base64(secrets["APIKEYS_SIGNING_KEY"])
    forger = Signer.from_base64(_secrets()["APIKEYS_SIGNING_KEY"])
    feed = FeedStandIn([secrets["APIKEYS_VERIFY_KEYS"]], [])
    record = _record(secrets)
    issued = Event.for_record(record, sequence=7, source="urn:apikeys:key_service")
    revoked_record = replace(record, status="revoked", revoked_at=datetime.now(UTC))
    revoked = Event.for_record(revoked_record, sequence=8, source="urn:apikeys:key_service")
    # A forged "issued" for a key that does not exist: signed, but not by the deployment's key.
    forged = Event.for_record(_record(secrets), sequence=9, source="urn:apikeys:key_service")
    tampered = SignedEvent.sign(issued, signer)
    tampered = replace(tampered, body=tampered.body.replace(b"billing export", b"billing exporT"))

    async with feed.serving() as feed_url, run_subscriber(_env(
        amqp_names, rabbitmq_url, feed_url,
        APIKEYS_SUBSCRIBER_AFTER="6",  # as if it had applied events 1 to 6 before
        APIKEYS_VERIFY_KEYS=secrets["APIKEYS_VERIFY_KEYS"],  # pinned: never read from the feed
    )) as subscriber:
        await _publish(rabbitmq_url, amqp_names.exchange, [
            SignedEvent.sign(forged, forger),
            tampered,
            SignedEvent.sign(issued, signer),
            SignedEvent.sign(issued, signer),  # at-least-once: a redelivered duplicate
            SignedEvent.sign(revoked, signer),
        ])
        first = await subscriber.next_event()
        second = await subscriber.next_event()

    assert first == {
        "event_id": issued.id, "type": "apikey.issued", "sequence": 7,
        "key_id": record.key_id, "name": "billing export", "status": "active",
        "issued_at": record.to_json()["issued_at"], "revoked_at": None, "revokes_at": None,
    }
    assert second["event_id"] == revoked.id
    assert second["type"] == "apikey.revoked"
    assert second["status"] == "revoked"
    assert second["revoked_at"] == revoked_record.to_json()["revoked_at"]
    log = "".join(subscriber.log)
    assert log.count("rejected message") == 2, log
    assert "ignored duplicate" in log
    # Nothing beyond the two genuine events was applied.
    assert subscriber.proc.stdout is not None
    assert await subscriber.proc.stdout.read() == b""


async def test_a_new_signing_key_is_read_from_key_service_when_an_event_names_it(
    amqp_names: AmqpNames, rabbitmq_url: str,
) -> None:
    old, new = _secrets(), _secrets()
    feed = FeedStandIn([old["APIKEYS_VERIFY_KEYS"]], [])
    events = [Event.for_record(_record(old), sequence=n, source="urn:apikeys:key_service")
              for n in (1, 2)]
    async with feed.serving() as feed_url, run_subscriber(
        _env(amqp_names, rabbitmq_url, feed_url),
    ) as subscriber:
        reads = feed.key_reads
        await _publish(rabbitmq_url, amqp_names.exchange, [
            SignedEvent.sign(events[0], Signer.from_base64(old["APIKEYS_SIGNING_KEY"]))])
        assert (await subscriber.next_event())["sequence"] == 1
        # key_service rotated its signing key: it publishes both, and signs with the new one.
        feed.verify_keys = [new["APIKEYS_VERIFY_KEYS"], old["APIKEYS_VERIFY_KEYS"]]
        await _publish(rabbitmq_url, amqp_names.exchange, [
            SignedEvent.sign(events[1], Signer.from_base64(new["APIKEYS_SIGNING_KEY"]))])
        assert (await subscriber.next_event())["sequence"] == 2
        assert feed.key_reads == reads + 1
    assert "rejected message" not in "".join(subscriber.log)


# -- through the real key_service: its outbox relay and its feed -----------------------------
@contextlib.contextmanager
def _key_service(tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    """key_service serving on a free port with its relay on the test's exchange; its URL."""
    created = subprocess.run(
        [sys.executable, "-m", "key_service", "create-admin", "--username", "events-admin",
         "--password-stdin"], input=f"{ADMIN_PASSWORD}\n", env={**os.environ, **env},
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert created.returncode == 0, created.stderr
    port = free_port()
    service = ServiceProcess(["-m", "key_service", "serve", "--port", str(port)], env,
                             tmp_path / "key_service.log")
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/readyz", timeout=60)
        except TimeoutError as exc:
            raise AssertionError(service.output()) from exc
        yield url
    finally:
        service.stop()


async def _admin(session: aiohttp.ClientSession, url: str) -> dict[str, str]:
    async with session.post(f"{url}/api/v1/session", json={
        "username": "events-admin", "password": ADMIN_PASSWORD,
    }) as response:
        assert response.status == 200, await response.text()
        return {"X-CSRF-Token": (await response.json())["csrf_token"]}


async def _issue(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                 name: str) -> str:
    async with session.post(f"{url}/api/v1/keys", json={"name": name},
                            headers=headers) as response:
        assert response.status == 201, await response.text()
        key_id: str = (await response.json())["key_id"]
        return key_id


async def _revoke(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                  key_id: str) -> None:
    async with session.post(f"{url}/api/v1/keys/{key_id}/revoke", headers=headers) as response:
        assert response.status == 200, await response.text()


async def test_subscriber_gets_the_relays_events_and_replays_what_came_before_it(
    tmp_path: Path, amqp_names: AmqpNames, rabbitmq_url: str, sqlite_url: str,
    secrets_env: dict[str, str],
) -> None:
    service_env = {
        **secrets_env,
        "KEY_SERVICE_DATABASE_URL": sqlite_url,
        "KEY_SERVICE_DATA_DIR": str(tmp_path),
        "RABBITMQ_URL": rabbitmq_url,
        "APIKEYS_EXCHANGE": amqp_names.exchange,
    }
    with _key_service(tmp_path, service_env) as url:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            headers = await _admin(session, url)
            # Issued before any subscriber queue exists: RabbitMQ drops it, the feed keeps it.
            early = await _issue(session, url, headers, "before the subscriber")
            # No deployment secret: a token that may read events, and the published keys.
            async with session.post(f"{url}/api/v1/tokens", headers=headers, json={
                "name": "example subscriber", "scopes": ["events:read"],
            }) as response:
                assert response.status == 201, await response.text()
                token = (await response.json())["token"]
            subscriber_env = _env(amqp_names, rabbitmq_url, url, token)
            async with run_subscriber(subscriber_env) as subscriber:
                replayed = await subscriber.next_event()
                live = await _issue(session, url, headers, "while it listens")
                issued = await subscriber.next_event()
                await _revoke(session, url, headers, live)
                revoked = await subscriber.next_event()
                await _revoke(session, url, headers, early)
                revoked_early = await subscriber.next_event()

    assert [(e["key_id"], e["type"], e["sequence"]) for e in (
        replayed, issued, revoked, revoked_early,
    )] == [
        (early, "apikey.issued", 1),
        (live, "apikey.issued", 2),
        (live, "apikey.revoked", 3),
        (early, "apikey.revoked", 4),
    ]
    assert replayed["name"] == "before the subscriber"
    assert revoked["revoked_at"] is not None
    assert "rejected message" not in "".join(subscriber.log)


# -- faults: waited out, never skipped ------------------------------------------------------
async def test_a_gap_waits_for_the_feed_while_key_service_is_away(
    amqp_names: AmqpNames, rabbitmq_url: str,
) -> None:
    # Events 1 and 2 never reach the queue; 3 does while the feed answers 503. The subscriber
    # neither exits nor skips: once the feed is back it applies 1, 2, then 3, in order.
    secrets = _secrets()
    signer = Signer.from_base64(secrets["APIKEYS_SIGNING_KEY"])
    record = _record(secrets)
    revoked = replace(record, status="revoked", revoked_at=datetime.now(UTC))
    events = [
        SignedEvent.sign(Event.for_record(r, sequence=n, source="urn:apikeys:key_service"), signer)
        for n, r in ((1, record), (2, revoked), (3, _record(secrets)))
    ]
    feed = FeedStandIn([secrets["APIKEYS_VERIFY_KEYS"]], [])
    async with feed.serving() as feed_url, run_subscriber(
        _env(amqp_names, rabbitmq_url, feed_url),
    ) as subscriber:
        feed.down = True
        reads = feed.reads
        await _publish(rabbitmq_url, amqp_names.exchange, [events[2]])
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while feed.reads < reads + 2:  # it reads, fails, waits and reads again
            assert asyncio.get_running_loop().time() < deadline, "".join(subscriber.log)
            await asyncio.sleep(0.05)
        assert subscriber.proc.returncode is None
        feed.events, feed.down = events, False
        applied = [await subscriber.next_event() for _ in range(3)]
    assert [(e["sequence"], e["status"]) for e in applied] == [
        (1, "active"), (2, "revoked"), (3, "active")]
    assert "cannot read key_service's feed" in "".join(subscriber.log)


async def test_rabbitmq_away_at_start_up_is_waited_for(
    amqp_names: AmqpNames, rabbitmq_url: str, fault_proxy: Any,
) -> None:
    secrets = _secrets()
    signer = Signer.from_base64(secrets["APIKEYS_SIGNING_KEY"])
    host, port = rabbitmq_url.rsplit("@", 1)[1].rstrip("/").split(":")
    proxy = fault_proxy(host, int(port))
    proxy.refuse()
    proxied = rabbitmq_url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
    feed = FeedStandIn([secrets["APIKEYS_VERIFY_KEYS"]], [])
    async with feed.serving() as feed_url, run_subscriber(
        _env(amqp_names, proxied, feed_url), wait_ready=False,
    ) as subscriber:
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while "cannot connect to RabbitMQ" not in "".join(subscriber.log):
            assert asyncio.get_running_loop().time() < deadline, "".join(subscriber.log)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)  # past its first pause: it tries again, still in vain
        assert subscriber.proc.returncode is None, "".join(subscriber.log)
        proxy.restore()
        await subscriber.consuming()
        event = Event.for_record(_record(secrets), sequence=1, source="urn:apikeys:key_service")
        await _publish(rabbitmq_url, amqp_names.exchange, [SignedEvent.sign(event, signer)])
        applied = await subscriber.next_event()
    assert applied["sequence"] == 1


async def test_a_lost_broker_is_left_for_the_next_address_and_nothing_is_missed(
    amqp_names: AmqpNames, rabbitmq_url: str, fault_proxy: Any,
) -> None:
    # Two addresses of one broker stand for two nodes of a cluster. The first one dies while
    # events wait on the durable queue: the subscriber goes on through the second and gets
    # every event from the queue, without reading the feed for a gap.
    secrets = _secrets()
    signer = Signer.from_base64(secrets["APIKEYS_SIGNING_KEY"])
    host, port = rabbitmq_url.rsplit("@", 1)[1].rstrip("/").split(":")
    first, second = fault_proxy(host, int(port)), fault_proxy(host, int(port))
    two = rabbitmq_url.replace(f"{host}:{port}", f"127.0.0.1:{first.port},127.0.0.1:{second.port}")
    events = [
        SignedEvent.sign(Event.for_record(_record(secrets), sequence=n,
                                          source="urn:apikeys:key_service"), signer)
        for n in (1, 2, 3)
    ]
    feed = FeedStandIn([secrets["APIKEYS_VERIFY_KEYS"]], [])
    async with feed.serving() as feed_url, run_subscriber(
        _env(amqp_names, two, feed_url),
    ) as subscriber:
        await _publish(rabbitmq_url, amqp_names.exchange, events[:1])
        assert (await subscriber.next_event())["sequence"] == 1
        first.cut()
        await _publish(rabbitmq_url, amqp_names.exchange, events[1:])
        applied = [await subscriber.next_event() for _ in range(2)]
        assert second.connections_accepted == 1
    assert [e["sequence"] for e in applied] == [2, 3]
    log = "".join(subscriber.log)
    assert "lost RabbitMQ" in log
    assert "were missed" not in log


def test_the_feed_is_required() -> None:
    secrets = _secrets()
    done = subprocess.run(
        [sys.executable, str(SUBSCRIBER)], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "APIKEYS_TOKEN": SUBSCRIBER_TOKEN,
             "APIKEYS_VERIFY_KEYS": secrets["APIKEYS_VERIFY_KEYS"],
             "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/"}, check=False,
    )
    assert done.returncode == 2
    assert "KEY_SERVICE_URL" in done.stderr
