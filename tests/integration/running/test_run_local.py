"""scripts/run_local.py refuses to start, saying why, when something it needs is missing."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.conftest import AmqpNames
from tests.integration.running.support import MARKER, marked_pids, start_run_local, wait_banner
from tests.support.procs import ROOT, free_port

SCRIPT = ROOT / "scripts" / "run_local.py"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "KEY_SERVICE_DATA_DIR": str(tmp_path / "data"),
            "GATEWAY_PORT": str(free_port()), "KEY_SERVICE_PORT": str(free_port()),
            "DEMO_BACKEND_PORT": str(free_port()), **env}
    return subprocess.run([sys.executable, str(SCRIPT)], env=full, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.rabbitmq
def test_without_redis_it_names_redis_and_how_to_start_it(tmp_path: Path,
                                                          rabbitmq_url: str) -> None:
    closed = free_port()
    result = _run(tmp_path, REDIS_URL=f"redis://127.0.0.1:{closed}/0", RABBITMQ_URL=rabbitmq_url)
    assert result.returncode == 1
    assert f"Redis is not reachable at 127.0.0.1:{closed}" in result.stderr
    assert "redis-server --daemonize yes" in result.stderr
    assert not (tmp_path / "data").exists(), "nothing is prepared before the checks pass"


@pytest.mark.redis
def test_without_rabbitmq_it_names_rabbitmq_and_how_to_start_it(tmp_path: Path,
                                                                redis_url: str) -> None:
    closed = free_port()
    result = _run(tmp_path, REDIS_URL=redis_url,
                  RABBITMQ_URL=f"amqp://guest:guest@127.0.0.1:{closed}/")
    assert result.returncode == 1
    assert f"RabbitMQ is not reachable at 127.0.0.1:{closed}" in result.stderr
    assert "rabbitmq-server -detached" in result.stderr


@pytest.mark.rabbitmq
def test_something_else_on_the_redis_port_is_not_taken_for_redis(tmp_path: Path,
                                                                 rabbitmq_url: str) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        # Not Redis: it accepts and answers nothing a Redis server would say.
        result = subprocess.Popen(
            [sys.executable, str(SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "REDIS_URL": f"redis://127.0.0.1:{port}/0",
                            "RABBITMQ_URL": rabbitmq_url,
                            "KEY_SERVICE_DATA_DIR": str(tmp_path / "data")},
        )
        conn, _ = server.accept()
        with conn:
            conn.recv(64)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            _, stderr = result.communicate(timeout=60)
    assert result.returncode == 1
    assert f"something that is not Redis answers at 127.0.0.1:{port}" in stderr


@pytest.mark.redis
@pytest.mark.rabbitmq
def test_a_taken_port_is_named_with_its_variable(tmp_path: Path, redis_url: str,
                                                 rabbitmq_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(tmp_path, REDIS_URL=redis_url, RABBITMQ_URL=rabbitmq_url,
                      KEY_SERVICE_PORT=str(port))
    assert result.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert "KEY_SERVICE_PORT=" in result.stderr


def test_a_bad_port_variable_is_named(tmp_path: Path) -> None:
    result = _run(tmp_path, GATEWAY_PORT="eighty")
    assert result.returncode == 1
    assert "GATEWAY_PORT must be an integer, got 'eighty'" in result.stderr


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.rabbitmq
def test_sigterm_stops_everything_and_a_second_run_reuses_the_secrets(
    tmp_path: Path, amqp_names: AmqpNames, redis_client: aioredis.Redis, redis_prefix: str,
) -> None:
    marker = uuid.uuid4().hex
    data = tmp_path / "data"
    env = {**os.environ, MARKER: marker, "KEY_SERVICE_DATA_DIR": str(data),
           "GATEWAY_PORT": str(free_port()), "KEY_SERVICE_PORT": str(free_port()),
           "DEMO_BACKEND_PORT": str(free_port()), "APIKEYS_EXCHANGE": amqp_names.exchange,
           "GATEWAY_QUEUE_PREFIX": f"{amqp_names.prefix}.gateway",
           "GATEWAY_REDIS_PREFIX": redis_prefix}
    env.pop("ADMIN_PASSWORD", None)
    env.pop("ADMIN_USERNAME", None)
    try:
        outputs: list[str] = []
        for run in (1, 2):
            log = tmp_path / f"run{run}.log"
            proc = start_run_local(env, log)
            outputs.append(wait_banner(proc, log))
            if run == 1:
                secrets_file = data / "secrets.env"
                assert secrets_file.stat().st_mode & 0o777 == 0o600
                assert data.stat().st_mode & 0o777 == 0o700
                first_secrets = secrets_file.read_text()
            # A service manager stops it with SIGTERM to the script alone.
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, log.read_text()
            assert marked_pids(marker) == [], log.read_text()
        first, second = outputs
        password = re.search(r"as 'admin' with password (\S+)", first)
        assert password is not None, first
        assert password.group(1) not in second, "a generated password is shown only once"
        assert "with the password given when it was created" in second
        assert "generated deployment secrets" not in second
        assert (data / "secrets.env").read_text() == first_secrets
    finally:
        for pid in marked_pids(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
