"""``make run`` in a fresh clone: log in, issue a key, call through the gateway, revoke, Ctrl-C.

The clone is made from the repository this test file belongs to, so only committed files take
part, as on a machine that has nothing but a clone. Installing every dependency from PyPI would
make this test take minutes, so the clone's ``.venv`` is prepared the way ``make install`` leaves
it, except that its packages come from the virtualenv running the tests (a ``.pth`` line) and it
is marked installed: ``make run`` then goes straight to ``scripts/run_local.py``, which runs the
clone's own code. Every process the run starts inherits a marker variable, so that finding
"nothing left running" means: no process on this machine carries the marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.conftest import AmqpNames
from tests.integration.running.support import MARKER, marked_pids
from tests.support.procs import free_port

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.rabbitmq]

START_TIMEOUT = 120.0
REVOKE_BOUND = 10.0


def _toplevel() -> Path:
    out = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=Path(__file__).parent,
        capture_output=True, text=True, check=True,
    )
    return Path(out.stdout.strip())


def _fresh_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(_toplevel()), str(clone)], check=True)
    # A virtualenv as `make install` leaves it, with the packages of the one running the tests.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(clone / ".venv")],
                   check=True)
    purelib = Path(subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-c",
         "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip())
    (purelib / "_reuse_test_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (clone / ".venv" / ".installed").touch()
    return clone


def _nothing_listens(port: int) -> bool:
    """True when a connection to ``127.0.0.1:port`` is refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


class MakeRun:
    """``make run`` as a subprocess in its own process group, its output in a file."""

    def __init__(self, clone: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            ["make", "run"], cwd=clone, env=env, stdin=subprocess.DEVNULL,
            stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def output(self) -> str:
        """Everything printed so far."""
        return self.log.read_text(errors="replace")

    async def wait_running(self) -> None:
        """Until the banner is printed; fail with the output if it exits or takes too long."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if "apikeys is running" in self.output():
                return
            assert self.proc.poll() is None, f"make run exited early:\n{self.output()}"
            await asyncio.sleep(0.2)
        raise AssertionError(f"make run did not come up in {START_TIMEOUT}s:\n{self.output()}")

    def interrupt(self) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self._out.close()


@contextlib.contextmanager
def _reap_on_failure(marker: str) -> Iterator[None]:
    """Whatever happens in the test, no process of the run outlives it."""
    try:
        yield
    finally:
        for pid in marked_pids(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def _wait_status(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                       status: int, within: float) -> int:
    """Poll ``url`` until it answers ``status``; the last status seen."""
    deadline = time.monotonic() + within
    last = -1
    while time.monotonic() < deadline:
        async with session.get(url, headers=headers) as response:
            last = response.status
            await response.read()
        if last == status:
            break
        await asyncio.sleep(0.1)
    return last


async def test_make_run_serves_keys_through_the_gateway_and_stops_cleanly(
    tmp_path: Path, amqp_names: AmqpNames, redis_client: aioredis.Redis, redis_prefix: str,
) -> None:
    clone = _fresh_clone(tmp_path)
    gateway_port, key_service_port, demo_port = free_port(), free_port(), free_port()
    marker = uuid.uuid4().hex
    password = secrets.token_urlsafe(18)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))},
        MARKER: marker,
        "GATEWAY_PORT": str(gateway_port),
        "KEY_SERVICE_PORT": str(key_service_port),
        "DEMO_BACKEND_PORT": str(demo_port),
        "KEY_SERVICE_DATA_DIR": str(tmp_path / "data"),
        "ADMIN_USERNAME": "platform-admin",
        "ADMIN_PASSWORD": password,
        "APIKEYS_EXCHANGE": amqp_names.exchange,
        "GATEWAY_QUEUE_PREFIX": f"{amqp_names.prefix}.gateway",
        "GATEWAY_REDIS_PREFIX": redis_prefix,
    }
    gateway = f"http://127.0.0.1:{gateway_port}"
    key_service = f"http://127.0.0.1:{key_service_port}"
    run = MakeRun(clone, env, tmp_path / "make-run.log")
    with _reap_on_failure(marker):
        await run.wait_running()
        banner = run.output()
        assert gateway in banner
        assert key_service in banner
        assert password not in banner, "a password given by the user is never printed"

        jar = aiohttp.CookieJar(unsafe=True)  # cookies from 127.0.0.1
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            async with session.post(f"{key_service}/api/v1/session", json={
                "username": "platform-admin", "password": password,
            }) as response:
                assert response.status == 200, await response.text()
                csrf = (await response.json())["csrf_token"]
            headers = {"X-CSRF-Token": csrf}
            async with session.post(f"{key_service}/api/v1/keys", json={"name": "make run"},
                                    headers=headers) as response:
                assert response.status == 201, await response.text()
                issued: dict[str, Any] = await response.json()
            credentials = {
                "X-AuthenticationKeyId": issued["key_id"],
                "X-AuthenticationKeyValue": issued["secret"],
            }

            async with session.get(f"{gateway}/hello", headers=credentials) as response:
                assert response.status == 200, await response.text()
                echoed = await response.json()
            assert echoed["path"] == "/hello"
            seen = {name.lower(): value for name, value in echoed["headers"]}
            assert seen["x-authenticated-key-id"] == issued["key_id"]
            assert "x-authenticationkeyvalue" not in seen
            async with session.get(f"{gateway}/hello") as response:
                assert response.status == 401

            async with session.post(f"{key_service}/api/v1/keys/{issued['key_id']}/revoke",
                                    headers=headers) as response:
                assert response.status == 200, await response.text()
            status = await _wait_status(session, f"{gateway}/hello", credentials, 401,
                                        REVOKE_BOUND)
            assert status == 401, f"revoked key still answered {status} after {REVOKE_BOUND}s"

        assert marked_pids(marker), "the run's processes carry the marker"
        run.interrupt()
        output = run.output()
        assert "everything stopped" in output, output
        assert marked_pids(marker) == [], f"processes left running:\n{output}"
        for port in (gateway_port, key_service_port, demo_port):
            assert _nothing_listens(port), f"port {port} still listens after make run stopped"
