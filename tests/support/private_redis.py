"""Private redis-server processes (Sentinels, a one-node Cluster) for tests of Redis URLs.

The shared Redis is never reconfigured: a test that needs another topology starts its own server
on a free port, in its own directory, and stops it afterwards.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.support.procs import free_port

__all__ = ["StartRedis", "start_one_node_cluster", "start_redis"]

StartRedis = Callable[..., int]


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[StartRedis]:
    """Factory: start a private redis-server with extra arguments; its port once it answers."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, port: int | None = None, password: str | None = None) -> int:
        port = port or free_port()
        workdir = tmp_path / f"redis-{port}"
        workdir.mkdir()
        with (workdir / "log").open("wb") as log:  # the child keeps its own descriptor
            procs.append(subprocess.Popen(
                ["redis-server", *args, "--port", str(port), "--bind", "127.0.0.1",
                 "--dir", str(workdir), "--save", "", "--appendonly", "no"],
                stdout=log, stderr=subprocess.STDOUT,
            ))
        client = redis.Redis(port=port, password=password, socket_timeout=1)
        deadline = time.monotonic() + 15
        try:
            while True:
                try:
                    client.ping()
                    return port
                except redis.ConnectionError:
                    assert procs[-1].poll() is None, (workdir / "log").read_text()
                    assert time.monotonic() < deadline, "private redis-server did not start"
                    time.sleep(0.05)
        finally:
            client.close()

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=10)


async def start_one_node_cluster(start_redis: StartRedis) -> int:
    """Start a one-node Redis Cluster holding every slot; its port once the cluster is ok."""
    port = free_port()
    while port + 10000 > 65535:  # the cluster bus listens on port + 10000
        port = free_port()
    start_redis("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", port=port)
    node = redis.Redis(port=port)
    try:
        node.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 15
        while b"cluster_state:ok" not in node.execute_command(  # type: ignore[no-untyped-call]
            "CLUSTER", "INFO",
        ):
            assert time.monotonic() < deadline, "the one-node cluster did not become ok"
            await asyncio.sleep(0.05)
    finally:
        node.close()
    return port
