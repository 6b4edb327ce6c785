"""The compose stack's two nginx fronts, run by the real nginx in front of the real stack.

``deploy/compose-nginx/forward-auth.conf`` (profile ``nginx``) asks a gateway for a verdict with
``auth_request`` and proxies to the backend itself; ``lb.conf`` spreads requests over the
gateways. Here they front the stack of ``scripts/run_local.py``: the only changes to the files
are the addresses (compose service names become 127.0.0.1 ports) and Docker's DNS resolver line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.conftest import AmqpNames
from tests.integration.running.support import MARKER, marked_pids, start_run_local, wait_banner
from tests.support.procs import ROOT, free_port

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.rabbitmq]

NGINX = "/usr/sbin/nginx"
CONFIGS = ROOT / "deploy" / "compose-nginx"
PASSWORD = "nginx front test password"


def _localize(conf: str, listen: int, gateway: int, backend: int) -> str:
    conf = re.sub(r"^\s*resolver .*;\n", "", conf, flags=re.M)
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    conf = conf.replace("set $gateway gateway:8080;", f"set $gateway 127.0.0.1:{gateway};")
    return conf.replace("set $backend demo_backend:8090;", f"set $backend 127.0.0.1:{backend};")


@contextlib.contextmanager
def _nginx(tmp_path: Path, servers: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    assert os.access(NGINX, os.X_OK), "nginx is not installed (scripts/debian-packages.sh)"
    for index, server in enumerate(servers):
        (tmp_path / f"server{index}.conf").write_text(server)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "worker_processes 1;\nevents {}\nhttp {\n"
        f"  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
        f"  proxy_temp_path {tmp_path}/proxy;\n"
        f"  include {tmp_path}/server*.conf;\n}}\n"
    )
    proc = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(main), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


async def test_forward_auth_and_load_balancer_fronts(
    tmp_path: Path, amqp_names: AmqpNames, redis_client: aioredis.Redis, redis_prefix: str,
) -> None:
    marker = uuid.uuid4().hex
    gateway, key_service, backend = free_port(), free_port(), free_port()
    forward_auth, lb, unreachable = free_port(), free_port(), free_port()
    env = {**os.environ, MARKER: marker, "KEY_SERVICE_DATA_DIR": str(tmp_path / "data"),
           "GATEWAY_PORT": str(gateway), "KEY_SERVICE_PORT": str(key_service),
           "DEMO_BACKEND_PORT": str(backend), "APIKEYS_EXCHANGE": amqp_names.exchange,
           "GATEWAY_QUEUE_PREFIX": f"{amqp_names.prefix}.gateway",
           "GATEWAY_REDIS_PREFIX": redis_prefix,
           "ADMIN_USERNAME": "nginx-admin", "ADMIN_PASSWORD": PASSWORD}
    log = tmp_path / "run_local.log"
    proc = start_run_local(env, log)
    try:
        wait_banner(proc, log)
        for attempt in range(3):
            servers = [
                _localize((CONFIGS / name).read_text(), port, gateway, backend)
                for name, port in (("forward-auth.conf", forward_auth), ("lb.conf", lb))
            ]
            # The forward-auth front once more, asking a gateway address where nothing listens.
            servers.append(_localize((CONFIGS / "forward-auth.conf").read_text(), unreachable,
                                     free_port(), backend))
            with _nginx(tmp_path, servers) as nginx:
                for port in (forward_auth, lb, unreachable):
                    _wait_port(port)
                if nginx.poll() is not None:
                    # A port taken since it was picked (another process's outgoing connection
                    # can land on it): nginx could not listen. Pick the fronts' ports afresh.
                    errors = (tmp_path / "error.log").read_text(errors="replace")
                    assert "Address already in use" in errors, errors
                    assert attempt < 2, errors
                    forward_auth, lb, unreachable = free_port(), free_port(), free_port()
                    continue
                await _exercise(key_service, forward_auth, lb, unreachable)
                assert nginx.poll() is None
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        for pid in marked_pids(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def _problem(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = await response.json(content_type=None)
    assert body["status"] == status
    return body


async def _exercise(key_service_port: int, forward_auth_port: int, lb_port: int,
                    unreachable_port: int) -> None:
    key_service = f"http://127.0.0.1:{key_service_port}"
    front = f"http://127.0.0.1:{forward_auth_port}"
    lb = f"http://127.0.0.1:{lb_port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(f"{key_service}/api/v1/session",
                                json={"username": "nginx-admin", "password": PASSWORD}) as r:
            assert r.status == 200, await r.text()
            headers = {"X-CSRF-Token": (await r.json())["csrf_token"]}
        async with session.post(f"{key_service}/api/v1/keys", json={"name": "behind nginx"},
                                headers=headers) as r:
            assert r.status == 201, await r.text()
            key: dict[str, Any] = await r.json()
        good = {"X-AuthenticationKeyId": key["key_id"], "X-AuthenticationKeyValue": key["secret"]}
        # Another last (checksum) character: never the secret itself.
        last = "0" if key["secret"][-1] != "0" else "1"
        wrong = {**good, "X-AuthenticationKeyValue": key["secret"][:-1] + last}

        # The gateway's own 401, to the byte, whatever the reason.
        async with session.get(f"{lb}/orders?page=2") as r:
            gateways_401 = await r.read()
        for sent in ({}, wrong):
            async with session.get(f"{front}/orders?page=2", headers=sent) as r:
                await _problem(r, 401)
                assert r.headers["WWW-Authenticate"].startswith('APIKey realm="backoffice"')
                assert await r.read() == gateways_401
        spoofed = {**good, "X-Authenticated-Key-Id": "spoofed", "X-Forwarded-Host": "evil",
                   "X-Request-Id": "chosen-by-the-client"}
        async with session.get(f"{front}/orders?page=2", headers=spoofed) as r:
            assert r.status == 200, await r.text()
            echoed = await r.json()
        assert echoed["path"] == "/orders"
        assert echoed["query"] == "page=2"
        seen = {name.lower(): value for name, value in echoed["headers"]}
        assert seen["x-authenticated-key-id"] == key["key_id"]
        assert seen["x-authenticated-key-name"] == "behind nginx"
        assert "x-authenticationkeyvalue" not in seen
        assert "x-authenticationkeyid" not in seen
        assert seen["x-forwarded-host"] != "evil"
        assert seen["x-request-id"] != "chosen-by-the-client"
        async with session.get(f"{front}/nginx-health") as r:
            assert r.status == 200

        async with session.get(f"{lb}/orders", headers=good) as r:
            assert r.status == 200, await r.text()
            through_lb = await r.json()
        seen = {name.lower(): value for name, value in through_lb["headers"]}
        assert seen["x-authenticated-key-id"] == key["key_id"]
        async with session.get(f"{lb}/orders") as r:
            assert r.status == 401

        async with session.post(f"{key_service}/api/v1/keys/{key['key_id']}/revoke",
                                headers=headers) as r:
            assert r.status == 200
        deadline = time.monotonic() + 10
        status = 200
        while status != 401 and time.monotonic() < deadline:
            async with session.get(f"{front}/orders", headers=good) as r:
                status = r.status
            if status != 401:
                await asyncio.sleep(0.1)
        assert status == 401, "a revoked key still passes the forward-auth front"

        # Fail closed with the right answer: a gateway that cannot be reached is a 503 ...
        async with session.get(f"http://127.0.0.1:{unreachable_port}/orders", headers=good) as r:
            await _problem(r, 503)
        # ... and the gateway's 429 for an address past the failure threshold (20 by default)
        # reaches the client as a 429 with its Retry-After.
        for _ in range(40):
            async with session.get(f"{front}/orders", headers=wrong) as r:
                if r.status == 429:
                    await _problem(r, 429)
                    assert int(r.headers["Retry-After"]) >= 1
                    break
                assert r.status == 401
        else:
            raise AssertionError("no 429 through the forward-auth front")
