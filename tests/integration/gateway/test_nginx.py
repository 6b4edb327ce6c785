"""The shipped nginx example (deploy/nginx/forward-auth.conf) with Debian's real nginx in front
of the demo backend, asking the gateway's forward-auth endpoint for every verdict."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.procs import ROOT, free_port

from .conftest import Gateway, GatewayFactory
from .frontproxy import (
    SPOOFED,
    FrontProxy,
    assert_401s_are_the_gateways,
    assert_forward_auth,
    spoofed_request,
)
from .test_request_path import known

NGINX = Path("/usr/sbin/nginx")
EXAMPLE = ROOT / "deploy" / "nginx" / "forward-auth.conf"
EXAMPLE_GATEWAY = "unix:/run/apikeys/gateway.sock"

MAIN_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/forward-auth.conf;
}}
"""


class Nginx(FrontProxy):
    """A private nginx (own prefix, pid file, temp paths and port) run as a child process."""

    def __init__(self, workdir: Path, gateway: str, backend_port: int) -> None:
        """``gateway``: what the example's ``server unix:...`` line should name instead."""
        assert NGINX.exists(), "Debian's nginx is required at /usr/sbin/nginx (apt install nginx)"
        port = free_port()
        site = EXAMPLE.read_text()
        assert f"server {EXAMPLE_GATEWAY};" in site
        site = site.replace(f"server {EXAMPLE_GATEWAY};", f"server {gateway};")
        for default, new in (("8090", backend_port), ("8000", port)):
            assert f"127.0.0.1:{default}" in site
            site = site.replace(f"127.0.0.1:{default}", f"127.0.0.1:{new}")
        (workdir / "forward-auth.conf").write_text(site)
        (workdir / "nginx.conf").write_text(MAIN_CONF.format(dir=workdir))
        self.error_log = workdir / "error.log"
        super().__init__("nginx", [
            str(NGINX), "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
            "-e", str(self.error_log),
        ], workdir, port)

    def output(self) -> str:
        """nginx's error log so far."""
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""


@pytest.fixture(params=["unix", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    """How nginx reaches the gateway: the example as shipped (its Unix socket), or over TCP."""
    return str(request.param)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Outside pytest's private tmp tree: nginx's workers run as another user and must reach it.
    path = Path(tempfile.mkdtemp(prefix="apikeys-nginx-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def gw(make_gateway: GatewayFactory, transport: str, socket_dir: Path) -> Gateway:
    # Trusted: nginx, on whichever transport it uses.
    trusted = {"GATEWAY_TRUSTED_PROXIES": "unix:" if transport == "unix" else "127.0.0.1"}
    return await make_gateway(
        unix_socket=str(socket_dir / "gw.sock") if transport == "unix" else None,
        GATEWAY_FAILED_AUTH_THRESHOLD="4", **trusted,
    )


@pytest.fixture
async def nginx(
    tmp_path: Path, gw: Gateway, transport: str, socket_dir: Path,
) -> AsyncIterator[Nginx]:
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    gateway = (f"unix:{socket_dir / 'gw.sock'}" if transport == "unix"
               else f"127.0.0.1:{gw.client.port}")
    running = Nginx(workdir, gateway, gw.backend.port)
    try:
        await running.wait_ready(known(gw, "readiness").headers)
        yield running
    finally:
        running.stop()


async def test_nginx_forward_auth(gw: Gateway, nginx: Nginx) -> None:
    await assert_forward_auth(gw, nginx, "through nginx")
    # Counted against the client nginx named, never against the socket all verdicts come by.
    assert await gw.redis.exists(f"{gw.prefix}fail:unix:") == 0


async def test_nginx_fails_closed_when_nothing_can_verify(gw: Gateway, nginx: Nginx) -> None:
    key = known(gw)
    gw.redis_proxy.cut()
    gw.key_service.down = True
    url = f"http://127.0.0.1:{nginx.port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"{url}/x", headers=key.headers) as resp:
            assert resp.status == 503
            assert int(resp.headers["Retry-After"]) >= 1
        await gw.client.close()  # the gateway itself goes away
        async with http.get(f"{url}/x", headers=key.headers) as resp:
            assert resp.status == 503
    assert gw.backend_requests == 0


async def test_a_401_through_nginx_is_the_gateways_byte_for_byte(gw: Gateway, nginx: Nginx) -> None:
    await assert_401s_are_the_gateways(gw, nginx)


async def test_nginx_passes_on_no_client_written_address_or_path(gw: Gateway, nginx: Nginx) -> None:
    seen = await spoofed_request(gw, nginx)
    assert "x-real-ip" not in seen
    assert seen["x-forwarded-host"] == ["127.0.0.1"]  # $host
    # nginx's own request ID, the one the gateway logged the verdict under.
    assert seen["x-request-id"] != [SPOOFED["X-Request-Id"]]
    # What nginx cannot do (deploy/nginx/README.md): drop headers by prefix.
    assert seen["x-authenticated-role"] == [SPOOFED["X-Authenticated-Role"]]
