"""The request path through a real socket: auth verdicts, forwarding, limits and failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from yarl import URL

from apikeys_shared.keys import generate_secret, new_key_id
from auth_gateway.appkeys import FAILURES
from auth_gateway.problems import UNAUTHORIZED_BODY, WWW_AUTHENTICATE

from .conftest import Gateway, GatewayFactory
from .keyring import IssuedKey

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Headers that legitimately differ between two responses.
_VARYING = {"date", "x-request-id"}


def known(gw: Gateway, name: str = "billing") -> IssuedKey:
    """A key that key_service knows."""
    key = gw.keyring.issue(name)
    gw.key_service.put(gw.keyring.signed(key), key.key_id)
    return key


def credential_lines(key: IssuedKey) -> bytes:
    """The two credential header lines, for a request written by hand."""
    return b"".join(b"%s: %s\r\n" % (name.encode(), value.encode())
                    for name, value in key.headers.items())


async def trickle(piece: bytes, count: int, pause: float) -> AsyncIterator[bytes]:
    """A request body of ``count`` pieces with ``pause`` seconds after each."""
    for _ in range(count):
        yield piece
        await asyncio.sleep(pause)


def _names(echo: dict[str, Any]) -> dict[str, str]:
    return {name.lower(): value for name, value in echo["headers"]}


async def test_valid_key_reaches_backend_without_credentials(gateway: Gateway) -> None:
    key = known(gateway, "Billing \u00e9t\u00e9")
    resp = await gateway.client.get(
        "/api/things?x=1", headers={
            **key.headers, "X-Authenticated-Key-Id": "spoof", "X-Request-Id": "req-123",
            "Connection": "X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "timeout=5",
        },
    )
    assert resp.status == 200
    echo = await resp.json()
    seen = _names(echo)
    assert echo["path"] == "/api/things"
    assert echo["query"] == "x=1"
    assert "x-authenticationkeyid" not in seen
    assert "x-authenticationkeyvalue" not in seen
    assert "x-secret-hop" not in seen
    assert "keep-alive" not in seen
    assert seen["x-authenticated-key-id"] == key.key_id
    assert seen["x-authenticated-key-name"] == "Billing %C3%A9t%C3%A9"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{gateway.client.port}"
    assert seen["x-request-id"] == "req-123" == resp.headers["X-Request-Id"]
    assert [v for n, v in echo["headers"] if n.lower() == "x-authenticated-key-id"] == [key.key_id]
    assert key.secret not in json.dumps(echo)


async def _unauthorized(gateway: Gateway, headers: Any) -> tuple[bytes, dict[str, str]]:
    resp = await gateway.client.get("/api/x", headers=headers)
    assert resp.status == 401
    body = await resp.read()
    names = {k.lower(): v for k, v in resp.headers.items() if k.lower() not in _VARYING}
    return body, names


async def test_every_failure_is_the_identical_401_and_nothing_is_forwarded(
    gateway: Gateway,
) -> None:
    good = known(gateway)
    revoked = gateway.keyring.revoke(known(gateway, "old"))
    gateway.key_service.put(gateway.keyring.signed(revoked), revoked.key_id)
    cases: dict[str, Any] = {
        "unknown": {"X-AuthenticationKeyId": new_key_id(),
                    "X-AuthenticationKeyValue": generate_secret()},
        "wrong secret": {"X-AuthenticationKeyId": good.key_id,
                         "X-AuthenticationKeyValue": generate_secret()},
        "revoked": revoked.headers,
        "malformed id": {"X-AuthenticationKeyId": "nope", "X-AuthenticationKeyValue": good.secret},
        "bad checksum": {"X-AuthenticationKeyId": good.key_id,
                         "X-AuthenticationKeyValue": good.secret[:-1] + (
                             "0" if good.secret[-1] != "0" else "1")},
        "missing": {},
        "only id": {"X-AuthenticationKeyId": good.key_id},
        "duplicated": [("X-AuthenticationKeyId", good.key_id),
                       ("X-AuthenticationKeyId", good.key_id),
                       ("X-AuthenticationKeyValue", good.secret)],
    }
    answers = {name: await _unauthorized(gateway, headers) for name, headers in cases.items()}
    first_body, first_headers = answers["unknown"]
    assert first_body == UNAUTHORIZED_BODY
    assert first_headers["www-authenticate"] == WWW_AUTHENTICATE
    assert first_headers["content-type"] == "application/problem+json"
    for name, (body, headers) in answers.items():
        assert (body, headers) == (first_body, first_headers), name
    assert gateway.backend_requests == 0
    # Malformed, missing and duplicated credentials never caused a lookup.
    assert gateway.key_service.calls == 3  # unknown, good (wrong secret), revoked
    for reason in ("unknown", "wrong_secret", "revoked", "malformed", "missing", "duplicated"):
        assert gateway.metric("gateway_auth_results_total", {"reason": reason}) >= 1, reason
    # And the key itself still works.
    resp = await gateway.client.get("/api/x", headers=good.headers)
    assert resp.status == 200


async def test_unauthenticated_route_forwards_without_identity(gateway: Gateway) -> None:
    resp = await gateway.client.get(
        "/public/hello",
        headers={"X-Authenticated-Key-Id": "spoof", "X-Authenticated-Key-Name": "x"},
    )
    assert resp.status == 200
    echo = await resp.json()
    assert echo["path"] == "/base/hello"
    assert not [n for n, _ in echo["headers"] if n.lower().startswith("x-authenticated-")]


async def test_unmatched_path_and_unsafe_path(gateway: Gateway) -> None:
    resp = await gateway.client.get("/nowhere")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body == {"type": "about:blank", "title": "Not Found", "status": 404,
                    "detail": "No route of this gateway matches the request path."}
    # yarl would normalise these paths; send them as they are written.
    for raw in ("/public/%2e%2e/api/x", "/public/..%2Fapi/x", "/public/./x", "/%2561pi/x",
                "/public/%2%65%2%65/api/x", "/public/%25%36%31/x", "/public/..%20/api/x"):
        url = URL(str(gateway.client.make_url("")).rstrip("/") + raw, encoded=True)
        resp = await gateway.client.session.get(url)
        assert resp.status == 400, raw
    assert gateway.backend_requests == 0


async def test_encoded_and_doubled_paths_are_matched_and_forwarded_normalised(
    gateway: Gateway,
) -> None:
    base = str(gateway.client.make_url("")).rstrip("/")
    # As written (yarl would normalise them): each is "/api/x" to an upstream, so each is the
    # required /api/ route's, never a 404 (or a broader route's).
    for raw in ("/%61pi/x", "//api/x", "/ap%69//x", "/API/x", "/api./x", "/api%20/x"):
        resp = await gateway.client.session.get(URL(base + raw, encoded=True))
        assert resp.status == 401, raw
    key = known(gateway)
    resp = await gateway.client.session.get(URL(base + "/%61pi//x", encoded=True),
                                            headers=key.headers)
    assert resp.status == 200
    assert (await resp.json())["path"] == "/api/x"
    assert gateway.backend_requests == 1


@pytest.mark.parametrize("method", METHODS)
async def test_methods_and_bodies_are_forwarded(gateway: Gateway, method: str) -> None:
    key = known(gateway)
    body = b"payload" * 1000 if method in ("POST", "PUT", "PATCH", "DELETE") else None
    resp = await gateway.client.request(method, "/api/m", headers=key.headers, data=body)
    assert resp.status == 200
    if method == "HEAD":
        assert await resp.read() == b""
        assert int(resp.headers["Content-Length"]) > 0
    else:
        echo = await resp.json()
        assert echo["method"] == method
        assert echo["body_length"] == (len(body) if body else 0)
    assert gateway.backend_requests == 1


async def test_chunked_upload_and_streamed_download(gateway: Gateway) -> None:
    key = known(gateway)

    async def chunks() -> Any:
        for _ in range(64):
            yield b"z" * 65536

    resp = await gateway.client.post("/api/up", headers=key.headers, data=chunks())
    assert resp.status == 200
    assert (await resp.json())["body_length"] == 64 * 65536
    resp = await gateway.client.get("/raw/_demo/bytes/3000000", headers=key.headers)
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "3000000"
    assert len(await resp.read()) == 3000000


async def test_body_and_header_limits(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(GATEWAY_MAX_BODY_BYTES="1000", GATEWAY_MAX_HEADER_BYTES="2048")
    key = known(gateway)
    resp = await gateway.client.post("/api/x", headers=key.headers, data=b"x" * 1001)
    assert resp.status == 413
    assert resp.content_type == "application/problem+json"

    async def chunks() -> Any:
        for _ in range(10):
            yield b"y" * 500

    resp = await gateway.client.post("/api/x", headers=key.headers, data=chunks())
    assert resp.status == 413
    resp = await gateway.client.get("/api/x", headers={**key.headers, "X-Big": "a" * 3000})
    assert resp.status == 431
    resp = await gateway.client.post("/api/x", headers=key.headers, data=b"x" * 1000)
    assert resp.status == 200
    assert gateway.backend_requests == 1


async def test_upstream_failures_are_502_and_504(gateway: Gateway) -> None:
    key = known(gateway)
    resp = await gateway.client.get("/dead/x", headers=key.headers)
    assert resp.status == 502
    assert (await resp.json())["status"] == 502
    resp = await gateway.client.get("/hung/x", headers=key.headers)
    assert resp.status == 504
    assert resp.content_type == "application/problem+json"
    resp = await gateway.client.get("/api/x?_demo_delay=5", headers=key.headers)
    assert resp.status == 504


async def test_failed_auths_throttle_the_address_across_processes(
    make_gateway: GatewayFactory,
) -> None:
    one = await make_gateway(GATEWAY_FAILED_AUTH_THRESHOLD="3", GATEWAY_FAILED_AUTH_WINDOW="30")
    two = await make_gateway(GATEWAY_FAILED_AUTH_THRESHOLD="3", GATEWAY_FAILED_AUTH_WINDOW="30")
    key = known(one)
    bad = {"X-AuthenticationKeyId": key.key_id, "X-AuthenticationKeyValue": generate_secret()}
    assert (await one.client.get("/api/x", headers=bad)).status == 401
    assert (await two.client.get("/api/x", headers=bad)).status == 401
    assert (await one.client.get("/api/x", headers={})).status == 401
    # The third failure blocked the address in "one", which shared the block through Redis;
    # "two" reads shared blocks every SYNC_SECONDS.
    for _ in range(100):
        if await two.app[FAILURES].retry_after("127.0.0.1") is not None:
            break
        await asyncio.sleep(0.02)
    calls = one.key_service.calls
    cold = known(one, "cold")  # a key neither process holds: it would need a lookup
    for gw in (one, two):
        resp = await gw.client.get("/api/x", headers=cold.headers)
        assert resp.status == 429
        assert 0 < int(resp.headers["Retry-After"]) <= 30
        assert resp.content_type == "application/problem+json"
    assert one.key_service.calls == calls  # refused before any lookup
    assert one.backend_requests == 0
    assert await one.redis.ttl(f"{one.prefix}fail:127.0.0.1") > 0


async def _blocked(gw: Gateway, address: str, threshold: int) -> None:
    """Fail ``threshold`` times from ``address`` (behind the trusted proxy), until blocked."""
    bad = {"X-AuthenticationKeyId": new_key_id(), "X-AuthenticationKeyValue": generate_secret(),
           "X-Forwarded-For": address}
    for _ in range(threshold):
        assert (await gw.client.get("/api/x", headers=bad)).status == 401
    assert await gw.app[FAILURES].retry_after(address) is not None


async def _answer(gw: Gateway, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    resp = await gw.client.get(path, headers=headers)
    return resp.status, await resp.read()


@pytest.mark.parametrize("path", ["/api/x", "/_auth/verify"])
async def test_a_blocked_address_keeps_the_keys_held_in_l1_and_nothing_else(
    make_gateway: GatewayFactory, path: str,
) -> None:
    gw = await make_gateway(GATEWAY_FAILED_AUTH_THRESHOLD="3", GATEWAY_TRUSTED_PROXIES="127.0.0.1")
    nat = {"X-Forwarded-For": "203.0.113.7"}
    used = known(gw, "used")  # verified once: L1 holds it with the remembered pair
    assert (await gw.client.get(path, headers={**used.headers, **nat})).status in (200, 204)
    pushed = gw.keyring.issue("pushed")  # put into L1 by its event, never verified here
    await gw.store.apply(gw.keyring.signed(pushed))
    cold = known(gw, "cold")  # valid, known to key_service, but held nowhere in the gateway
    revoked = known(gw, "revoked")
    assert (await gw.client.get(path, headers=revoked.headers)).status in (200, 204)
    await gw.store.apply(gw.keyring.signed(gw.keyring.revoke(revoked)))
    await _blocked(gw, nat["X-Forwarded-For"], 3)
    calls, forwarded = gw.key_service.calls, gw.backend_requests
    counter = gw.app[FAILURES].key(nat["X-Forwarded-For"])
    failures = int(await gw.redis.get(counter))

    ok = 200 if path == "/api/x" else 204
    for key in (used, pushed, used):
        status, _ = await _answer(gw, path, {**key.headers, **nat})
        assert status == ok, key.name
    refused = {
        "held, wrong secret": {"X-AuthenticationKeyId": used.key_id,
                               "X-AuthenticationKeyValue": generate_secret()},
        "held by event, wrong secret": {"X-AuthenticationKeyId": pushed.key_id,
                                        "X-AuthenticationKeyValue": generate_secret()},
        "not held": cold.headers,
        "unknown": {"X-AuthenticationKeyId": new_key_id(),
                    "X-AuthenticationKeyValue": generate_secret()},
        "held revoked": revoked.headers,
        "missing": {},
    }
    answers = {name: await _answer(gw, path, {**headers, **nat})
               for name, headers in refused.items()}
    for name, (status, body) in answers.items():
        assert status == 429, name
        assert body == answers["unknown"][1], name  # one answer, whatever the reason
    assert gw.key_service.calls == calls  # no lookup for a blocked address
    assert gw.backend_requests == forwarded + (3 if path == "/api/x" else 0)
    # Every refusal counted as a failure, the held key's wrong secret like the rest.
    assert int(await gw.redis.get(counter)) == failures + len(refused)
    # The right secret after the wrong ones still works; another address is not touched.
    assert (await _answer(gw, path, {**used.headers, **nat}))[0] == ok
    assert (await _answer(gw, path, cold.headers))[0] == ok


async def test_an_ipv6_client_walking_its_slash_64_is_throttled_as_one(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(GATEWAY_FAILED_AUTH_THRESHOLD="3", GATEWAY_TRUSTED_PROXIES="127.0.0.1")
    key = known(gw)
    bad = {"X-AuthenticationKeyId": key.key_id, "X-AuthenticationKeyValue": generate_secret()}
    for host in ("1", "2", "3"):  # three addresses of one /64, behind a trusted proxy
        headers = {**bad, "X-Forwarded-For": f"2001:db8:1:2::{host}"}
        assert (await gw.client.get("/api/x", headers=headers)).status == 401
    cold = known(gw, "cold")  # not held yet: from a blocked address it would need a lookup
    fourth = {**cold.headers, "X-Forwarded-For": "2001:db8:1:2:ffff::9"}
    assert (await gw.client.get("/api/x", headers=fourth)).status == 429
    other = {**key.headers, "X-Forwarded-For": "2001:db8:1:3::1"}  # the next /64
    assert (await gw.client.get("/api/x", headers=other)).status == 200
    assert await gw.redis.ttl(f"{gw.prefix}fail:2001:db8:1:2::/64") > 0


async def test_redis_down_keeps_verifying_then_503_when_key_service_is_down_too(
    gateway: Gateway,
) -> None:
    cached, fresh, third = known(gateway), known(gateway), known(gateway)
    assert (await gateway.client.get("/api/x", headers=cached.headers)).status == 200
    gateway.redis_proxy.cut()
    assert (await gateway.client.get("/api/x", headers=cached.headers)).status == 200
    assert (await gateway.client.get("/api/x", headers=fresh.headers)).status == 200
    gateway.key_service.down = True
    forwarded = gateway.backend_requests
    resp = await gateway.client.get("/api/x", headers=third.headers)
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.content_type == "application/problem+json"
    assert gateway.backend_requests == forwarded
    # Keys already verified keep working from the in-process cache.
    assert (await gateway.client.get("/api/x", headers=cached.headers)).status == 200
    gateway.redis_proxy.restore()
    gateway.key_service.down = False
    await asyncio.sleep(1.1)  # the key store pauses Redis for a second after an error
    assert (await gateway.client.get("/api/x", headers=third.headers)).status == 200


async def test_revocation_applied_takes_effect_at_once(gateway: Gateway) -> None:
    key = known(gateway)
    assert (await gateway.client.get("/api/x", headers=key.headers)).status == 200
    await gateway.store.apply(gateway.keyring.signed(gateway.keyring.revoke(key)))
    assert (await gateway.client.get("/api/x", headers=key.headers)).status == 401


async def test_forged_redis_record_does_not_grant_access(gateway: Gateway) -> None:
    from apikeys_shared.signing import Signer, generate_signing_key

    key = gateway.keyring.issue("never issued")  # key_service does not know it
    forger = Signer.from_base64(generate_signing_key()[0])
    await gateway.redis.set(
        gateway.store.redis_key(key.key_id), gateway.keyring.signed(key, forger).to_text()
    )
    assert (await gateway.client.get("/api/x", headers=key.headers)).status == 401
    assert gateway.metric(
        "gateway_rejected_records_total", {"origin": "redis", "reason": "signature"}
    ) == 1
    assert gateway.backend_requests == 0


async def test_forward_auth_endpoint(gateway: Gateway) -> None:
    key = known(gateway, "front")
    resp = await gateway.client.get("/_auth/verify", headers=key.headers)
    assert resp.status == 204
    assert resp.headers["X-Authenticated-Key-Id"] == key.key_id
    assert resp.headers["X-Authenticated-Key-Name"] == "front"
    resp = await gateway.client.post("/_auth/verify/some/original/path", headers=key.headers)
    assert resp.status == 204
    resp = await gateway.client.get(
        "/_auth/verify", headers={**key.headers, "X-AuthenticationKeyValue": generate_secret()}
    )
    assert resp.status == 401
    assert await resp.read() == UNAUTHORIZED_BODY
    assert resp.headers["WWW-Authenticate"] == WWW_AUTHENTICATE
    assert "X-Authenticated-Key-Id" not in resp.headers
    assert gateway.backend_requests == 0


async def test_ops_endpoints(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(sync=False)
    assert (await gateway.client.get("/healthz")).status == 200
    resp = await gateway.client.get("/readyz")
    assert resp.status == 503
    assert "catch-up" in (await resp.json())["detail"]
    from auth_gateway.sync import SYNCED

    gateway.app[SYNCED].set()
    assert (await gateway.client.get("/readyz")).status == 200
    gateway.redis_proxy.cut()
    resp = await gateway.client.get("/readyz")
    assert resp.status == 503
    assert "Redis" in (await resp.json())["detail"]
    gateway.redis_proxy.restore()
    key = known(gateway)
    await gateway.client.get("/api/x", headers=key.headers)
    await gateway.client.get("/api/x", headers=key.headers)
    text = await (await gateway.client.get("/metrics")).text()
    assert 'gateway_http_requests_total{route="/api/",status="200"} 2.0' in text
    assert 'gateway_auth_results_total{reason="ok"} 2.0' in text
    assert 'gateway_cache_lookups_total{result="hit",tier="l1"} 1.0' in text
    assert "gateway_upstream_seconds_bucket" in text
    assert "gateway_event_lag_seconds" in text
    assert key.secret not in text


async def test_metrics_only_for_the_allowed_peers(make_gateway: GatewayFactory) -> None:
    closed = await make_gateway(GATEWAY_METRICS_ALLOW="10.0.0.0/8",
                                GATEWAY_TRUSTED_PROXIES="127.0.0.1")
    # The peer decides, never X-Forwarded-For (even from a trusted proxy).
    resp = await closed.client.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
    assert resp.status == 403
    assert resp.content_type == "application/problem+json"
    assert "GATEWAY_METRICS_ALLOW" in (await resp.json())["detail"]
    assert (await closed.client.get("/healthz")).status == 200
    opened = await make_gateway(GATEWAY_METRICS_ALLOW="10.0.0.0/8, 127.0.0.1")
    resp = await opened.client.get("/metrics")
    assert resp.status == 200
    assert "gateway_http_requests_total" in await resp.text()


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 300000])
async def test_responses_each_side_of_the_buffering_limit_arrive_whole(
    gateway: Gateway, size: int,
) -> None:
    # Up to BUFFERED_BODY_LIMIT the gateway reads the body and answers in one write; above it,
    # it streams: the client must not be able to tell the two apart.
    key = known(gateway)
    resp = await gateway.client.get(f"/raw/_demo/bytes/{size}", headers=key.headers)
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(size)
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["X-Request-Id"]
    assert await resp.read() == b"x" * size
    resp = await gateway.client.head(f"/raw/_demo/bytes/{size}", headers=key.headers)
    assert resp.status == 200
    assert await resp.read() == b""


async def test_a_remembered_pair_still_meets_every_check(gateway: Gateway) -> None:
    # After one success the gateway skips the peppered hash for that exact pair: a wrong
    # secret, a duplicated header and a revocation must still get the 401.
    key = known(gateway)
    for _ in range(3):
        assert (await gateway.client.get("/api/x", headers=key.headers)).status == 200
    wrong = {**key.headers, "X-AuthenticationKeyValue": key.secret[:-1] + (
        "A" if key.secret[-1] != "A" else "B")}
    assert (await gateway.client.get("/api/x", headers=wrong)).status == 401
    doubled = [*key.headers.items(), ("X-AuthenticationKeyValue", key.secret)]
    assert (await gateway.client.get("/api/x", headers=doubled)).status == 401
    doubled = [*key.headers.items(), ("X-AuthenticationKeyId", key.key_id)]
    assert (await gateway.client.get("/api/x", headers=doubled)).status == 401
    # A secret that is not even text (its last byte replaced by 0xff) is refused, not an error.
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.client.port)
    try:
        writer.write(b"GET /api/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
                     + credential_lines(key)[:-3] + b"\xff\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401 ")
    await gateway.store.apply(gateway.keyring.signed(gateway.keyring.revoke(key)))
    assert (await gateway.client.get("/api/x", headers=key.headers)).status == 401
    assert gateway.backend_requests == 3


async def test_a_slow_but_steady_upload_outlasts_the_timeout(gateway: Gateway) -> None:
    # The timeout (2 s here) bounds pauses in the body, not the whole upload.
    key = known(gateway)
    resp = await gateway.client.post(
        "/api/up", headers=key.headers, data=trickle(b"t" * 100_000, 8, 0.5))
    assert resp.status == 200
    assert (await resp.json())["body_length"] == 800_000


async def test_a_stalled_upload_is_408_and_the_connection_closes(gateway: Gateway) -> None:
    key = known(gateway)
    head = (b"POST /api/up HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000000\r\n"
            + credential_lines(key) + b"\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.client.port)
    try:
        writer.write(head + b"s" * 200_000)  # then nothing more
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)  # read() to EOF: it closes
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    assert b"Connection: close" in rest
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["status"] == 408


async def test_the_response_wait_starts_when_the_body_is_complete(gateway: Gateway) -> None:
    # A body that took longer than the timeout does not use up the upstream's time, and an
    # upstream slower than the timeout after the body is still a 504.
    key = known(gateway)
    resp = await gateway.client.post(
        "/api/x?_demo_delay=1", headers=key.headers, data=trickle(b"u" * 1000, 5, 0.6))
    assert resp.status == 200
    resp = await gateway.client.post(
        "/api/x?_demo_delay=5", headers=key.headers, data=trickle(b"u" * 1000, 5, 0.6))
    assert resp.status == 504


async def test_a_trickling_upload_is_cut_once_under_the_minimum_rate(
    make_gateway: GatewayFactory,
) -> None:
    # Every pause is short, but on average the body comes far slower than the minimum rate:
    # after a timeout's worth of grace (2 s here) it stops buying time, and the client gets 408.
    gateway = await make_gateway(GATEWAY_MIN_UPLOAD_RATE="10000")
    key = known(gateway)

    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await gateway.client.post(
        "/api/up", headers=key.headers, data=trickle(b"r" * 1000, 40, 0.25))
    assert resp.status == 408
    assert (await resp.json())["status"] == 408
    assert loop.time() - started < 8  # the whole trickle would have taken 10 s
