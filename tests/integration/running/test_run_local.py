"""scripts/run_local.py refuses to start, saying why, when something it needs is missing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "GATEWAY_PORT must be a port number" in result.stderr
