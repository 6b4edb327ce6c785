"""End to end: key_service, RabbitMQ, Redis, two gateway processes and the demo backend.

Everything runs as it would in production (subprocesses started from the command line) against
the real services; the tests act as an administrator on key_service's JSON API, as API clients
of the two gateways, and as an attacker with write access to RabbitMQ or Redis.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiohttp
import redis.asyncio as aioredis
from multidict import CIMultiDict

from apikeys_shared.config import Env, load_secrets
from apikeys_shared.events import Event, KeyRecord, SignedEvent
from apikeys_shared.keys import generate_secret, new_key_id
from apikeys_shared.signing import Signer, generate_signing_key
from tests.support.services import RABBITMQ_URL, REDIS_URL
from tests.support.stack import Admin, Stack, StackOptions, credentials, eventually, metric

# A short L1 lifetime makes every gateway read Redis again within a second, so that what Redis
# holds (tampered or not) is exercised rather than hidden behind the in-process cache.
STACK_OPTIONS = StackOptions(extra_gateway_env={
    "GATEWAY_L1_TTL": "0.5", "GATEWAY_L1_KEEP_WHILE_CURRENT": "false",
})

ID_HEADER = "X-AuthenticationKeyId"
SECRET_HEADER = "X-AuthenticationKeyValue"
# Headers whose values differ on every response by design.
VOLATILE = {"date", "x-request-id"}


async def echo(
    http: aiohttp.ClientSession, url: str, headers: Any = None, *, method: str = "GET",
    data: bytes | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """Status and, for a 200, what the demo backend says it received."""
    async with http.request(method, f"{url}/api/orders?page=1", headers=headers, data=data) as r:
        body = await r.read()
        return r.status, (json.loads(body) if r.status == 200 else None)


async def statuses(http: aiohttp.ClientSession, stack: Stack, headers: Any) -> list[int]:
    """The status each gateway process answers for one request with ``headers``."""
    return [(await echo(http, url, headers))[0] for url in stack.gateway_urls]


def stranger() -> Signer:
    """A signing key no gateway trusts."""
    seed, _ = generate_signing_key()
    return Signer.from_base64(seed)


async def feed_record(
    http: aiohttp.ClientSession, stack: Stack, key_id: str, status: str
) -> SignedEvent:
    """key_service's genuine signed event that put ``key_id`` into ``status``."""
    token = stack.secrets["APIKEYS_INTERNAL_TOKEN"]
    async with http.get(
        f"{stack.key_service_url}/internal/v1/events", params={"after": "0", "limit": "1000"},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    for entry in body["events"]:
        signed = SignedEvent.from_json(entry)
        record = Event.from_bytes(signed.body).record
        if record.key_id == key_id and record.status == status:
            return signed
    raise AssertionError(f"no {status} event for the key in the feed")


def forged_active(stack: Stack, genuine: SignedEvent, secret: str, signer: Signer) -> SignedEvent:
    """An ``active`` record for a key with a much higher sequence, hashed with the real pepper
    (the worst case: an attacker who knows the pepper but not the signing key)."""
    event = Event.from_bytes(genuine.body)
    peppers = load_secrets(Env(stack.secrets), signer=False, verifier=True).peppers
    digest, version = peppers.hash(event.record.key_id, secret)
    record = replace(
        event.record, status="active", revoked_at=None, secret_hash=digest, hash_version=version
    )
    return SignedEvent.sign(
        replace(event, record=record, sequence=event.sequence + 1000, type="apikey.issued"),
        signer,
    )


async def revoked_everywhere(
    http: aiohttp.ClientSession, stack: Stack, key: tuple[str, str]
) -> None:
    async def check() -> bool:
        return await statuses(http, stack, credentials(*key)) == [401] * len(stack.gateway_urls)
    await eventually(check, "every gateway process refuses the revoked key")


async def test_an_issued_key_passes_and_the_backend_never_sees_the_credentials(
    stack: Stack, admin: Admin, http: aiohttp.ClientSession
) -> None:
    key_id, secret = await admin.issue("orders app")
    sent = CIMultiDict(credentials(key_id, secret))
    # A client may not speak for the gateway: these must be replaced, not passed on.
    sent.add("X-Authenticated-Key-Id", new_key_id())
    sent.add("X-Authenticated-Key-Name", "admin")
    for url in stack.gateway_urls:
        for method, data in (("GET", None), ("POST", b'{"order": 1}')):
            status, seen = await echo(http, url, sent, method=method, data=data)
            assert status == 200
            assert seen is not None
            names = [name.lower() for name, _ in seen["headers"]]
            assert ID_HEADER.lower() not in names
            assert SECRET_HEADER.lower() not in names
            assert secret not in json.dumps(seen)
            ids = [v for n, v in seen["headers"] if n.lower() == "x-authenticated-key-id"]
            key_names = [v for n, v in seen["headers"] if n.lower() == "x-authenticated-key-name"]
            assert ids == [key_id]
            assert key_names == ["orders app"]
            assert seen["method"] == method
            assert seen["body_length"] == len(data or b"")


async def test_a_revoked_key_is_refused_by_both_gateway_processes(
    stack: Stack, admin: Admin, http: aiohttp.ClientSession
) -> None:
    key = await admin.issue("soon revoked")
    # Both processes (and Redis) know the key as active before it is revoked.
    assert await statuses(http, stack, credentials(*key)) == [200, 200]
    await admin.revoke(key[0])
    await revoked_everywhere(http, stack, key)
    before = stack.backend_stats()["requests"]
    for _ in range(10):
        assert await statuses(http, stack, credentials(*key)) == [401, 401]
    assert stack.backend_stats()["requests"] == before


async def test_every_refusal_is_the_same_401(
    stack: Stack, admin: Admin, http: aiohttp.ClientSession
) -> None:
    key_id, secret = await admin.issue("reference")
    revoked = await admin.issue("revoked")
    await admin.revoke(revoked[0])
    await revoked_everywhere(http, stack, revoked)
    other = generate_secret()
    cases: dict[str, list[tuple[str, str]]] = {
        "unknown": list(credentials(new_key_id(), generate_secret()).items()),
        "wrong secret": list(credentials(key_id, other).items()),
        "revoked": list(credentials(*revoked).items()),
        "malformed id": list(credentials(key_id.upper(), secret).items()),
        "malformed secret": list(credentials(key_id, secret[:-1] + "!").items()),
        "bad checksum": list(credentials(key_id, secret[:-6] + other[-6:]).items()),
        "short secret": list(credentials(key_id, secret[:63]).items()),
        "missing both": [],
        "missing secret": [(ID_HEADER, key_id)],
        "missing id": [(SECRET_HEADER, secret)],
        "duplicated id": [(ID_HEADER, key_id), *credentials(key_id, secret).items()],
        "duplicated secret": [*credentials(key_id, secret).items(), (SECRET_HEADER, secret)],
        "empty values": [(ID_HEADER, ""), (SECRET_HEADER, "")],
    }
    before = stack.backend_stats()["requests"]
    answers: dict[tuple[str, str], tuple[int, list[tuple[str, str]], bytes]] = {}
    for url in stack.gateway_urls:
        for case, headers in cases.items():
            async with http.get(f"{url}/api/orders", headers=CIMultiDict(headers)) as resp:
                kept = sorted(
                    (name.lower(), value) for name, value in resp.headers.items()
                    if name.lower() not in VOLATILE
                )
                answers[(url, case)] = (resp.status, kept, await resp.read())
    reference = answers[(stack.gateway_urls[0], "unknown")]
    assert reference[0] == 401
    assert any(name == "www-authenticate" for name, _ in reference[1])
    different = {k: v for k, v in answers.items() if v != reference}
    assert different == {}
    assert stack.backend_stats()["requests"] == before
    # The genuine key still passes: nothing above locked it out.
    assert await statuses(http, stack, credentials(key_id, secret)) == [200, 200]


async def test_forged_events_do_not_grant_access(
    stack: Stack, admin: Admin, http: aiohttp.ClientSession
) -> None:
    key = await admin.issue("target")
    await admin.revoke(key[0])
    await revoked_everywhere(http, stack, key)
    genuine = await feed_record(http, stack, key[0], "revoked")
    real_key_id = genuine.signing_key
    forger = stranger()
    revive = forged_active(stack, genuine, key[1], forger)
    # A brand-new key that key_service never issued, minted by the attacker.
    minted_secret = generate_secret()
    now = datetime.now(UTC)
    minted_id = new_key_id()
    peppers = load_secrets(Env(stack.secrets), signer=False, verifier=True).peppers
    digest, version = peppers.hash(minted_id, minted_secret)
    minted = SignedEvent.sign(
        Event.for_record(
            KeyRecord(minted_id, "minted", "active", now, None, digest, version),
            sequence=Event.from_bytes(genuine.body).sequence + 2000, source="urn:attacker",
        ),
        forger,
    )
    messages = [
        (revive.body, revive.amqp_headers),  # signed by a key nobody trusts
        (revive.body, {"x-signature": revive.signature, "x-signing-key": real_key_id}),
        (revive.body, {}),  # unsigned
        (revive.body, genuine.amqp_headers),  # a genuine signature of another body
        (minted.body, minted.amqp_headers),
        (minted.body, {"x-signature": minted.signature, "x-signing-key": real_key_id}),
        (b"not even json", genuine.amqp_headers),
    ]
    before = [
        await metric(http, url, "gateway_events_total", {"source": "amqp", "outcome": "rejected"})
        for url in stack.gateway_urls
    ]
    connection = await aio_pika.connect(RABBITMQ_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(stack.exchange)
        for body, headers in messages:
            message = aio_pika.Message(
                body, headers=headers, content_type="application/cloudevents+json"
            )
            await exchange.publish(message, routing_key="key.issued")

    async def all_rejected() -> bool:
        for url, count in zip(stack.gateway_urls, before, strict=True):
            now = await metric(
                http, url, "gateway_events_total", {"source": "amqp", "outcome": "rejected"}
            )
            if now < count + len(messages):
                return False
        return True
    await eventually(all_rejected, "both gateway processes consumed and rejected every forgery")
    before_requests = stack.backend_stats()["requests"]
    for _ in range(5):
        assert await statuses(http, stack, credentials(*key)) == [401, 401]
        assert await statuses(http, stack, credentials(minted_id, minted_secret)) == [401, 401]
    assert stack.backend_stats()["requests"] == before_requests


def tampered_values(forged: SignedEvent, genuine: SignedEvent, key_id: str) -> list[str]:
    """What an attacker with write access to Redis might put there for ``key_id``."""
    return [
        forged.to_text(),  # an attacker's signature
        json.dumps({**forged.to_json(), "signature": genuine.signature,
                    "signing_key": genuine.signing_key}),  # a genuine signature, wrong body
        json.dumps({"status": "active", "key_id": key_id}),  # no envelope at all
        "garbage",
    ]


async def test_tampered_redis_records_do_not_grant_access(
    stack: Stack, admin: Admin, http: aiohttp.ClientSession
) -> None:
    # An active key whose record the attacker replaces with one that hashes their own secret.
    key_id, secret = await admin.issue("tampered")
    assert await statuses(http, stack, credentials(key_id, secret)) == [200, 200]
    genuine = await feed_record(http, stack, key_id, "active")
    attacker_secret = generate_secret()
    forged = forged_active(stack, genuine, attacker_secret, stranger())
    redis_key = f"{stack.redis_prefix}key:{key_id}"
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        assert await client.exists(redis_key) == 1
        before = stack.backend_stats()["requests"]
        for value in tampered_values(forged, genuine, key_id):
            for url in stack.gateway_urls:
                await refused_while_tampered(
                    http, url, (key_id, attacker_secret), client, redis_key, value
                )
        assert stack.backend_stats()["requests"] == before
        # The refused record is treated as absent: the genuine key still works everywhere.
        await client.set(redis_key, "garbage")
        assert await statuses(http, stack, credentials(key_id, secret)) == [200, 200]
    finally:
        await client.aclose()


async def test_tampered_redis_records_do_not_revive_a_revoked_key(
    stack: Stack, admin: Admin, http: aiohttp.ClientSession
) -> None:
    key = await admin.issue("revoked, then tampered")
    await admin.revoke(key[0])
    await revoked_everywhere(http, stack, key)
    genuine = await feed_record(http, stack, key[0], "revoked")
    forged = forged_active(stack, genuine, key[1], stranger())
    redis_key = f"{stack.redis_prefix}key:{key[0]}"
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        before = stack.backend_stats()["requests"]
        for value in tampered_values(forged, genuine, key[0]):
            await client.set(redis_key, value)
            await refused_for_a_while(http, stack, key)
        assert stack.backend_stats()["requests"] == before
    finally:
        await client.aclose()


async def refused_for_a_while(
    http: aiohttp.ClientSession, stack: Stack, key: tuple[str, str]
) -> None:
    """Both gateways refuse ``key`` for a second: twice the L1 lifetime of this stack, so that
    each one looks the key up again meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    while loop.time() < deadline:
        assert await statuses(http, stack, credentials(*key)) == [401, 401]
        await asyncio.sleep(0.05)


async def refused_while_tampered(
    http: aiohttp.ClientSession, url: str, key: tuple[str, str], client: aioredis.Redis,
    redis_key: str, value: str,
) -> None:
    """Ask one gateway for ``key`` until it has read (and refused) the tampered record.

    The value is written again before every request: a gateway that refuses a record asks
    key_service and repairs Redis with the genuine one.
    """
    labels = {"origin": "redis"}
    start = await metric(http, url, "gateway_rejected_records_total", labels)

    async def seen() -> bool:
        await client.set(redis_key, value)
        status, _ = await echo(http, url, credentials(*key))
        assert status == 401
        return await metric(http, url, "gateway_rejected_records_total", labels) > start
    await eventually(seen, "the gateway read the tampered record and refused it")


async def test_a_replayed_older_record_in_redis_does_not_revive_a_revoked_key(
    stack: Stack, admin: Admin, http: aiohttp.ClientSession
) -> None:
    # The record is genuinely signed, only stale: whoever can write Redis puts back the
    # key's own ``issued`` record after it was revoked.
    key = await admin.issue("replayed")
    await admin.revoke(key[0])
    await revoked_everywhere(http, stack, key)
    issued = await feed_record(http, stack, key[0], "active")
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.set(f"{stack.redis_prefix}key:{key[0]}", issued.to_text())
        before = stack.backend_stats()["requests"]
        await refused_for_a_while(http, stack, key)
        assert stack.backend_stats()["requests"] == before
    finally:
        await client.aclose()
