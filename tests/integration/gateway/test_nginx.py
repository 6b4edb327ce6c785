"""The shipped nginx example (deploy/nginx/forward-auth.conf) with Debian's real nginx in front
of the demo backend, asking the gateway's forward-auth endpoint for every verdict."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from apikeys_shared.keys import generate_secret
from auth_gateway.problems import UNAUTHORIZED_BODY, WWW_AUTHENTICATE
from tests.support.procs import ROOT, free_port

from .conftest import Gateway, GatewayFactory
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


class Nginx:
    """A private nginx (own prefix, pid file, temp paths and port) run as a child process."""

    def __init__(self, workdir: Path, gateway: str, backend_port: int) -> None:
        """``gateway``: what the example's ``server unix:...`` line should name instead."""
        assert NGINX.exists(), "Debian's nginx is required at /usr/sbin/nginx (apt install nginx)"
        self.dir = workdir
        self.port = free_port()
        site = EXAMPLE.read_text()
        assert f"server {EXAMPLE_GATEWAY};" in site
        site = site.replace(f"server {EXAMPLE_GATEWAY};", f"server {gateway};")
        for default, port in (("8090", backend_port), ("8000", self.port)):
            assert f"127.0.0.1:{default}" in site
            site = site.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
        (workdir / "forward-auth.conf").write_text(site)
        (workdir / "nginx.conf").write_text(MAIN_CONF.format(dir=workdir))
        self.log = (workdir / "stderr.log").open("wb")
        self.proc = subprocess.Popen(
            [str(NGINX), "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
             "-e", str(workdir / "error.log")],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait(self) -> None:
        for _ in range(100):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise TimeoutError(f"nginx did not listen: {self.error_log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


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
def nginx(tmp_path: Path, gw: Gateway, transport: str, socket_dir: Path) -> Iterator[Nginx]:
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    gateway = (f"unix:{socket_dir / 'gw.sock'}" if transport == "unix"
               else f"127.0.0.1:{gw.client.port}")
    running = Nginx(workdir, gateway, gw.backend.port)
    try:
        yield running
    finally:
        running.stop()


async def test_nginx_forward_auth(gw: Gateway, nginx: Nginx) -> None:
    await nginx.wait()
    key = known(gw, "through nginx")
    url = f"http://127.0.0.1:{nginx.port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.post(
            f"{url}/orders?x=1", data=b"body" * 100,
            headers={**key.headers, "X-Authenticated-Key-Id": "spoof"},
        ) as resp:
            assert resp.status == 200, nginx.error_log()
            echo = await resp.json()
        seen = {name.lower(): value for name, value in echo["headers"]}
        assert echo["path"] == "/orders"
        assert echo["body_length"] == 400
        assert "x-authenticationkeyid" not in seen
        assert "x-authenticationkeyvalue" not in seen
        assert seen["x-authenticated-key-id"] == key.key_id
        assert seen["x-authenticated-key-name"] == "through nginx"
        assert gw.backend_requests == 1

        wrong = {**key.headers, "X-AuthenticationKeyValue": generate_secret()}
        for headers in (wrong, {}, {"X-AuthenticationKeyId": key.key_id}):
            async with http.get(f"{url}/orders", headers=headers) as resp:
                assert resp.status == 401
                assert await resp.read() == UNAUTHORIZED_BODY
                assert resp.headers["WWW-Authenticate"] == WWW_AUTHENTICATE
                assert resp.content_type == "application/problem+json"
        assert gw.backend_requests == 1

        # Failures were counted against the client (X-Forwarded-For from a trusted nginx).
        async with http.get(f"{url}/orders", headers=wrong) as resp:
            assert resp.status == 401
        async with http.get(f"{url}/orders", headers=key.headers) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) > 0
        assert gw.backend_requests == 1
    # Counted against the client nginx named, never against the socket all verdicts come by.
    assert await gw.redis.exists(f"{gw.prefix}fail:127.0.0.1") == 1
    assert await gw.redis.exists(f"{gw.prefix}fail:unix:") == 0


async def test_nginx_fails_closed_when_nothing_can_verify(gw: Gateway, nginx: Nginx) -> None:
    await nginx.wait()
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


async def _raw_get(
    port: int, path: str, headers: dict[str, str],
) -> tuple[bytes, list[bytes], bytes]:
    """One request on a fresh connection: the status line, the header lines, the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(f"GET {path} HTTP/1.1\r\nHost: example\r\n{lines}Connection: close\r\n\r\n"
                     .encode())
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *header_lines = head.split(b"\r\n")
    return status, header_lines, body


# What tells one server's answer from another's by nature rather than by content.
_TRANSPORT = (b"date", b"server", b"connection", b"keep-alive", b"content-length")


def _headers(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    pairs = [tuple(line.split(b":", 1)) for line in lines]
    return sorted((name.strip().lower(), value.strip()) for name, value in pairs
                  if name.strip().lower() not in _TRANSPORT)


async def test_a_401_through_nginx_is_the_gateways_byte_for_byte(gw: Gateway, nginx: Nginx) -> None:
    await nginx.wait()
    key = known(gw)
    wrong = {**key.headers, "X-AuthenticationKeyValue": generate_secret()}
    for headers in (wrong, {}, {"X-AuthenticationKeyId": key.key_id}):
        rid = {"X-Request-Id": "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"}
        own = await _raw_get(gw.client.port, "/api/orders", {**headers, **rid})
        # nginx names the request itself; the gateway logs the verdict under nginx's ID.
        fronted = await _raw_get(nginx.port, "/orders", headers)
        assert own[0] == fronted[0] == b"HTTP/1.1 401 Unauthorized"
        assert fronted[2] == own[2] == UNAUTHORIZED_BODY
        ours, theirs = _headers(own[1]), _headers(fronted[1])
        assert [n for n, _ in theirs] == [n for n, _ in ours], (ours, theirs)
        assert [h for h in theirs if h[0] != b"x-request-id"] == [
            h for h in ours if h[0] != b"x-request-id"]
        assert dict(theirs)[b"www-authenticate"] == WWW_AUTHENTICATE.encode()  # once, not twice
        # Both failures counted against 127.0.0.1: start afresh, below the fixture's threshold.
        await gw.redis.delete(f"{gw.prefix}fail:127.0.0.1", f"{gw.prefix}fail:unix:")
    assert gw.backend_requests == 0


async def test_nginx_passes_on_no_client_written_address_or_path(gw: Gateway, nginx: Nginx) -> None:
    await nginx.wait()
    key = known(gw, "addresses")
    spoofed = {
        "X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9",
        "Forwarded": "for=203.0.113.9", "X-Original-URL": "/admin", "X-Rewrite-URL": "/admin",
        "True-Client-IP": "203.0.113.9", "X-Forwarded-Prefix": "/evil",
        "X-Authenticated-Key-Name": "spoof",
    }
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(f"http://127.0.0.1:{nginx.port}/orders", headers={**key.headers, **spoofed})
        as resp,
    ):
        assert resp.status == 200, nginx.error_log()
        echo = await resp.json()
    seen: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]  # the address nginx saw, nothing appended
    assert seen["x-authenticated-key-name"] == ["addresses"]
    for name in ("x-real-ip", "forwarded", "x-original-url", "x-rewrite-url", "true-client-ip",
                 "x-forwarded-prefix"):
        assert name not in seen, name
