"""``python -m auth_gateway serve`` as real processes: SO_REUSEPORT workers kept current by the
real key_service and RabbitMQ, graceful drain on SIGTERM, a 200 MB upload streamed with bounded
memory, and start-up refused on bad configuration."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import AmqpNames
from tests.support.procs import ROOT, ServiceProcess, free_port
from tests.support.services import RABBITMQ_URL, REDIS_URL

from .realks import RealKeyService

UPLOAD_BYTES = 200 * 1024 * 1024


@pytest.fixture
def demo_backend(tmp_path: Path) -> Iterator[str]:
    """``python -m demo_backend`` on a free port; its base URL."""
    port = free_port()
    proc = ServiceProcess(
        ["-m", "demo_backend", "--port", str(port)], {}, tmp_path / "backend.log"
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture
def gateway_env(
    tmp_path: Path, secrets_env: dict[str, str], redis_prefix: str, amqp_names: AmqpNames,
    demo_backend: str, real_key_service: RealKeyService, redis_client: object,
) -> dict[str, str]:
    """Environment of a gateway process wired to this test's services."""
    routes = tmp_path / "routes.toml"
    routes.write_text(f'[[route]]\nprefix = "/"\nupstream = "{demo_backend}"\n')
    return {
        **secrets_env,
        "GATEWAY_ROUTES": str(routes),
        "KEY_SERVICE_URL": real_key_service.url,
        "REDIS_URL": REDIS_URL,
        "RABBITMQ_URL": RABBITMQ_URL,
        "APIKEYS_EXCHANGE": amqp_names.exchange,
        "GATEWAY_QUEUE_PREFIX": amqp_names.prefix,
        "GATEWAY_REDIS_PREFIX": redis_prefix,
        "GATEWAY_FEED_POLL_INTERVAL": "0.5",
        "GATEWAY_SHUTDOWN_TIMEOUT": "10",
        # Every request here comes from 127.0.0.1; the throttle is tested on its own.
        "GATEWAY_FAILED_AUTH_THRESHOLD": "1000000",
    }


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(env: dict[str, str], *args: str) -> ServiceProcess:
        log = tmp_path / f"gateway{len(started)}.log"
        proc = ServiceProcess(["-m", "auth_gateway", "serve", *args], env, log)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # A fresh connection per request, so that SO_REUSEPORT spreads them over the workers.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=30),
    ) as session:
        yield session


async def _wait_ready(
    http: aiohttp.ClientSession, base: str, proc: ServiceProcess, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.proc.poll() is None, proc.output()
        try:
            async with http.get(f"{base}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"gateway not ready: {proc.output()[-3000:]}")


async def _status(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    async with http.get(url, headers=headers) as resp:
        await resp.read()
        return resp.status


async def _backend_requests(http: aiohttp.ClientSession, backend: str) -> int:
    async with http.get(f"{backend}/_demo/stats") as resp:
        count: int = (await resp.json())["requests"]
        return count


async def test_workers_share_the_port_stay_current_and_drain_on_sigterm(
    gateway_env: dict[str, str], real_key_service: RealKeyService, demo_backend: str,
    start_gateway: Callable[..., ServiceProcess], http: aiohttp.ClientSession,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_gateway(gateway_env, "--port", str(port), "--workers", "2")
    await _wait_ready(http, base, proc)
    # /readyz answered by one worker says nothing of the other, which may still be starting:
    # ask until both have answered (the kernel spreads fresh connections over the listeners).
    pids: set[int] = set()
    deadline = time.monotonic() + 30
    while len(pids) < 2 and time.monotonic() < deadline:
        async with http.get(f"{base}/healthz") as resp:
            pids.add((await resp.json())["pid"])
        if len(pids) < 2:
            await asyncio.sleep(0.02)
    assert len(pids) == 2, "both workers should take connections on the shared port"

    key = await real_key_service.issue("workers")
    assert {await _status(http, f"{base}/x", key) for _ in range(10)} == {200}
    await real_key_service.revoke(key["X-AuthenticationKeyId"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        statuses = [await _status(http, f"{base}/x", key) for _ in range(20)]
        if set(statuses) == {401}:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"revocation did not reach every worker: {statuses}")

    # Graceful drain: a request in flight when SIGTERM arrives still completes.
    other = await real_key_service.issue("drain")
    seen = await _backend_requests(http, demo_backend)
    slow = asyncio.create_task(_status(http, f"{base}/slow?_demo_delay=2", other))
    while await _backend_requests(http, demo_backend) == seen:  # until it is in flight
        await asyncio.sleep(0.02)
    os.killpg(proc.proc.pid, signal.SIGTERM)
    assert await slow == 200
    await _exited_cleanly(proc)
    assert '"message":"request"' in proc.output()
    assert other["X-AuthenticationKeyValue"] not in proc.output()


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_unix_socket_replaces_a_stale_one_serves_every_worker_and_goes_at_drain(
    gateway_env: dict[str, str], real_key_service: RealKeyService, tmp_path: Path,
    demo_backend: str, workers: int,
    start_gateway: Callable[..., ServiceProcess], http: aiohttp.ClientSession,
) -> None:
    path = tmp_path / "gw.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # as a crashed gateway leaves it: the file, nobody listening
    stale.close()
    port = free_port()
    env = {**gateway_env, "GATEWAY_UNIX_SOCKET": str(path), "GATEWAY_UNIX_SOCKET_MODE": "600"}
    proc = start_gateway(env, "--port", str(port), "--workers", str(workers))
    await _wait_ready(http, f"http://127.0.0.1:{port}", proc)
    info = path.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600

    async with aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=str(path), force_close=True),
        timeout=aiohttp.ClientTimeout(total=30),
    ) as unix:
        pids: set[int] = set()
        deadline = time.monotonic() + 30
        while len(pids) < workers and time.monotonic() < deadline:
            async with unix.get("http://gateway/healthz") as resp:
                pids.add((await resp.json())["pid"])
        assert len(pids) == workers, "every worker should accept on the shared Unix socket"
        key = await real_key_service.issue("over the socket")
        assert await _status(unix, "http://gateway/x", key) == 200
        async with unix.get("http://gateway/_auth/verify", headers=key) as resp:
            assert resp.status == 204
            assert resp.headers["X-Authenticated-Key-Id"] == key["X-AuthenticationKeyId"]
        wrong = {**key, "X-AuthenticationKeyValue": "x" * 64}
        assert await _status(unix, "http://gateway/x", wrong) == 401

    # A second gateway on the same path refuses to start rather than steal it.
    second = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "auth_gateway", "serve", "--port", "0",
        env={**os.environ, **env}, cwd=ROOT, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(second.communicate(), 60)
    assert second.returncode == 2
    assert f"another gateway is using {str(path)!r}" in stderr.decode()
    assert path.exists()

    # Drain: a request in flight over the socket completes; a new connection is refused at
    # once (not left waiting in a backlog nobody reads), and the file goes with the gateway.
    async with aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=str(path)), timeout=aiohttp.ClientTimeout(total=30),
    ) as unix:
        seen = await _backend_requests(http, demo_backend)
        slow = asyncio.create_task(_status(unix, "http://gateway/slow?_demo_delay=2", key))
        while await _backend_requests(http, demo_backend) == seen:
            await asyncio.sleep(0.02)
        os.killpg(proc.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 1
        while path.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
            await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1)
        assert not slow.done(), "refused while the drain was still under way"
        assert await slow == 200
    await _exited_cleanly(proc)
    assert '"remote":"unix:"' in proc.output()  # the access log names the socket's peers
    assert "peers on the Unix socket are not trusted proxies" in proc.output()
    assert not path.exists(), "the socket file should go with the gateway"
    # The path is free again: a successor takes it.
    successor = start_gateway(env, "--port", str(free_port()))
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        assert successor.proc.poll() is None, successor.output()[-3000:]
        await asyncio.sleep(0.05)
    assert stat.S_ISSOCK(path.stat().st_mode)


async def _exited_cleanly(proc: ServiceProcess, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while proc.proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert proc.proc.returncode == 0, proc.output()[-3000:]


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
async def test_large_upload_streams_with_bounded_memory(
    gateway_env: dict[str, str], real_key_service: RealKeyService,
    start_gateway: Callable[..., ServiceProcess], http: aiohttp.ClientSession,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_gateway(gateway_env, "--port", str(port))
    await _wait_ready(http, base, proc)
    key = await real_key_service.issue("uploader")
    assert await _status(http, f"{base}/warm", key) == 200
    before = _peak_rss_kib(proc.proc.pid)
    digest = hashlib.sha256()
    block = os.urandom(1024 * 1024)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(UPLOAD_BYTES // len(block)):
            digest.update(block)
            yield block

    async with http.post(f"{base}/upload", data=body(), headers=key) as resp:
        assert resp.status == 200
        echo = await resp.json()
    assert echo["body_length"] == UPLOAD_BYTES
    assert echo["body_sha256"] == digest.hexdigest()
    grown_mib = (_peak_rss_kib(proc.proc.pid) - before) / 1024
    assert grown_mib < 48, f"gateway peak memory grew by {grown_mib:.0f} MiB for a 200 MiB upload"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"GATEWAY_ROUTES": ""}, "GATEWAY_ROUTES is required"),
        ({"APIKEYS_VERIFY_KEYS": ""}, "APIKEYS_VERIFY_KEYS"),
        ({"GATEWAY_PORT": "eighty"}, "GATEWAY_PORT must be an integer"),
        ({"GATEWAY_ROUTES": "BAD"}, "route #1 (prefix '/x'): auth must be"),
        ({"GATEWAY_UNIX_SOCKET": "NOT_A_SOCKET"}, "exists and is not a socket"),
        ({"GATEWAY_UNIX_SOCKET": "/no/such/dir/gw.sock"}, "GATEWAY_UNIX_SOCKET: the directory"),
    ],
)
def test_start_up_refused_naming_the_problem(
    tmp_path: Path, secrets_env: dict[str, str], change: dict[str, str], expected: str
) -> None:
    bad_routes = tmp_path / "bad.toml"
    bad_routes.write_text('[[route]]\nprefix = "/x"\nupstream = "http://h"\nauth = "sometimes"\n')
    env = {**os.environ, **secrets_env, "GATEWAY_ROUTES": str(bad_routes), **change}
    if change.get("GATEWAY_UNIX_SOCKET") == "NOT_A_SOCKET":
        env["GATEWAY_UNIX_SOCKET"] = str(bad_routes)  # a regular file stands there
    if change.get("GATEWAY_ROUTES") == "BAD":
        env["GATEWAY_ROUTES"] = str(bad_routes)
    elif "GATEWAY_ROUTES" not in change:
        good = tmp_path / "good.toml"
        good.write_text('[[route]]\nprefix = "/"\nupstream = "http://127.0.0.1:1"\n')
        env["GATEWAY_ROUTES"] = str(good)
    result = subprocess.run(
        [sys.executable, "-m", "auth_gateway", "serve", "--port", "0"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert expected in result.stderr
