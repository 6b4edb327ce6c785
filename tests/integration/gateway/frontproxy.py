"""What the tests of the shipped front-proxy examples (deploy/nginx, deploy/traefik,
deploy/envoy) share: the proxy run as a child process from a copy of the example, its answers
read byte by byte, and the checks every example must pass, whatever the proxy:

* a known key reaches the backend with the gateway's identity headers and without the
  credentials; wrong, missing and half credentials get the gateway's 401, and too many of them
  its 429, counted against the client the proxy names (never against the proxy);
* a 401 through the proxy is the gateway's own, byte for byte but for its request ID;
* no client-written address, path or alias of an identity header reaches the backend.

Each test module adds what differs from one proxy to the next (see their docstrings).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp
import pytest

from apikeys_shared.keys import generate_secret
from auth_gateway.problems import UNAUTHORIZED_BODY, WWW_AUTHENTICATE

from .conftest import Gateway
from .test_request_path import known

__all__ = [
    "SPOOFED", "FrontProxy", "assert_401s_are_the_gateways", "assert_forward_auth",
    "content_headers", "raw_get", "readdress", "spoofed_request", "venv_script",
]


def venv_script(name: str, package: str) -> Path:
    """A program the ``test`` extra installs beside this interpreter; fails naming its package."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.is_file():
        pytest.fail(f"{name} is missing from {path.parent}: the test extra's {package} package "
                    f"brings it (make install)", pytrace=False)
    return path


def readdress(text: str, old: str, new: str) -> str:
    """``text`` with every ``old`` replaced by ``new``; ``old`` must be there (the example
    changed otherwise, and the test would silently run something else)."""
    assert old in text, f"{old!r} is no longer in the example"
    return text.replace(old, new)


class FrontProxy:
    """A proxy process started from ``argv``, its output kept in ``workdir/output.log``."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path, port: int) -> None:
        self.name = name
        self.port = port
        self._log_path = workdir / "output.log"
        self._log = self._log_path.open("wb")
        self.proc = subprocess.Popen(
            list(argv), cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def output(self) -> str:
        """What the proxy printed so far (for failure messages)."""
        self._log.flush()
        return self._log_path.read_text(errors="replace")

    async def wait_ready(self, credentials: Mapping[str, str]) -> None:
        """Until a request with ``credentials`` (a known key's) gets through the proxy to the
        demo backend's stats page, which the backend does not count among its requests; a
        proxy that loads its routes after it listens answers 404 until then."""
        status = b""
        for _ in range(400):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            try:
                status, _, _ = await raw_get(self.port, "/_demo/stats", credentials)
            except OSError:
                status = b"(not listening)"
            if status == b"HTTP/1.1 200 OK":
                return
            await asyncio.sleep(0.025)
        raise TimeoutError(f"{self.name} is not ready ({status!r}):\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the proxy with ``sig`` (kill it if it lingers) and close its log."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


async def raw_get(
    port: int, path: str, headers: Mapping[str, str] | Sequence[tuple[str, str]],
) -> tuple[bytes, list[bytes], bytes]:
    """One GET on a fresh connection: the status line, the header lines, the body.

    ``headers`` as pairs may name a header twice."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = "".join(f"{name}: {value}\r\n" for name, value in pairs)
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


def content_headers(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The header lines of ``raw_get`` as sorted (lower-case name, value) pairs, without those
    that only tell one server's transport from another's."""
    pairs = [tuple(line.split(b":", 1)) for line in lines]
    return sorted((name.strip().lower(), value.strip()) for name, value in pairs
                  if name.strip().lower() not in _TRANSPORT)


def _fresh_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))


async def assert_forward_auth(gw: Gateway, proxy: FrontProxy, name: str) -> dict[str, str]:
    """A known key through ``proxy``, then wrong, missing and half credentials until the
    gateway's 429 (``gw`` must block after 4 failures), and the held key still served from the
    blocked client; the headers the backend saw first."""
    key = known(gw, name)
    url = f"http://127.0.0.1:{proxy.port}"
    served = gw.backend_requests
    async with _fresh_session() as http:
        async with http.post(
            f"{url}/orders?x=1", data=b"body" * 100,
            headers={**key.headers, "X-Authenticated-Key-Id": "spoof"},
        ) as resp:
            assert resp.status == 200, proxy.output()
            echo = await resp.json()
        seen = {name.lower(): value for name, value in echo["headers"]}
        assert (echo["method"], echo["path"], echo["query"]) == ("POST", "/orders", "x=1")
        assert echo["body_length"] == 400
        assert "x-authenticationkeyid" not in seen
        assert "x-authenticationkeyvalue" not in seen
        assert seen["x-authenticated-key-id"] == key.key_id
        assert seen["x-authenticated-key-name"] == name
        assert gw.backend_requests == served + 1

        wrong = {**key.headers, "X-AuthenticationKeyValue": generate_secret()}
        for headers in (wrong, {}, {"X-AuthenticationKeyId": key.key_id}):
            async with http.get(f"{url}/orders", headers=headers) as resp:
                assert resp.status == 401
                assert await resp.read() == UNAUTHORIZED_BODY
                assert resp.headers.getall("WWW-Authenticate") == [WWW_AUTHENTICATE]
                assert resp.content_type == "application/problem+json"

        # Failures are counted against the client the proxy names, so a fourth one blocks it.
        async with http.get(f"{url}/orders", headers=wrong) as resp:
            assert resp.status == 401
        async with http.get(f"{url}/orders", headers=wrong) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) > 0
            assert resp.content_type == "application/problem+json"
        # A key the gateway holds, with its secret, is still served from the blocked address.
        async with http.get(f"{url}/orders", headers=key.headers) as resp:
            assert resp.status == 200
    assert gw.backend_requests == served + 2
    assert await gw.redis.exists(f"{gw.prefix}fail:127.0.0.1") == 1
    return seen


async def assert_401s_are_the_gateways(gw: Gateway, proxy: FrontProxy) -> None:
    """For wrong, missing, half and duplicated credentials, a 401 through ``proxy`` is the one
    the gateway gives when asked directly: the same body, and the same content headers (each
    once) but for X-Request-Id, which names each request."""
    key = known(gw)
    served = gw.backend_requests
    wrong = {**key.headers, "X-AuthenticationKeyValue": generate_secret()}
    twice = [*key.headers.items(), ("X-AuthenticationKeyId", key.key_id)]
    for headers in (wrong, {}, {"X-AuthenticationKeyId": key.key_id}, twice):
        own = await raw_get(gw.client.port, "/api/orders", headers)
        fronted = await raw_get(proxy.port, "/orders", headers)
        assert own[0] == fronted[0] == b"HTTP/1.1 401 Unauthorized"
        assert fronted[2] == own[2] == UNAUTHORIZED_BODY
        ours, theirs = content_headers(own[1]), content_headers(fronted[1])
        assert [n for n, _ in theirs] == [n for n, _ in ours], (ours, theirs)
        assert [h for h in theirs if h[0] != b"x-request-id"] == [
            h for h in ours if h[0] != b"x-request-id"]
        assert dict(theirs)[b"www-authenticate"] == WWW_AUTHENTICATE.encode()  # once, not twice
        # Both failures counted against 127.0.0.1: start afresh, below the fixture's threshold.
        await gw.redis.delete(f"{gw.prefix}fail:127.0.0.1")
    assert gw.backend_requests == served


# Headers a client may write to pass for another address, path or identity.
SPOOFED = {
    "X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9",
    "Forwarded": "for=203.0.113.9", "X-Original-URL": "/admin", "X-Rewrite-URL": "/admin",
    "True-Client-IP": "203.0.113.9", "X-Forwarded-Prefix": "/evil",
    "X-Forwarded-Host": "evil.example", "X-Request-Id": "chosen-by-the-client",
    "X-Authenticated-Key-Name": "spoof", "X-Authenticated-Role": "admin",
    # Aliases: CGI, WSGI and PHP backends read these as X-Authenticated-Key-Id and so on.
    "X_Authenticated_Key_Id": "spoof", "X.Authenticated.Key.Name": "spoof",
    "X_Forwarded_For": "203.0.113.9",
}


async def spoofed_request(gw: Gateway, proxy: FrontProxy) -> dict[str, list[str]]:
    """A known key with every header of SPOOFED through ``proxy``: what the backend saw (name →
    values), after checking what every example must drop or set. A failed attempt with the same
    headers is counted against the address the proxy saw, not the one the client wrote."""
    key = known(gw, "addresses")
    async with (
        _fresh_session() as http,
        http.get(f"http://127.0.0.1:{proxy.port}/orders", headers={**key.headers, **SPOOFED})
        as resp,
    ):
        assert resp.status == 200, proxy.output()
        echo = await resp.json()
    seen: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]  # the address the proxy saw, nothing more
    assert seen["x-authenticated-key-name"] == ["addresses"]
    for name in ("forwarded", "x-original-url", "x-rewrite-url", "true-client-ip",
                 "x-forwarded-prefix", "x_authenticated_key_id", "x.authenticated.key.name",
                 "x_forwarded_for"):
        assert name not in seen, name

    wrong = {**key.headers, "X-AuthenticationKeyValue": generate_secret(), **SPOOFED}
    status, _, _ = await raw_get(proxy.port, "/orders", wrong)
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert await gw.redis.exists(f"{gw.prefix}fail:127.0.0.1") == 1
    assert await gw.redis.exists(f"{gw.prefix}fail:203.0.113.9") == 0
    return seen
