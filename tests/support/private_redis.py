"""Private redis-server processes (Sentinels, a one-node Cluster, a Sentinel group that fails
over) for tests of Redis URLs and of failover.

The shared Redis is never reconfigured: a test that needs another topology starts its own server
on a free port, in its own directory, and stops it afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis

from tests.support.procs import free_port, require_free_ports

__all__ = ["SentinelGroup", "StartRedis", "start_one_node_cluster", "start_redis"]

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


class _Server:
    """One redis-server (or Sentinel) process of a ``SentinelGroup``."""

    def __init__(self, base: Path, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.workdir = base / name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> None:
        self.workdir.mkdir(exist_ok=True)
        with (self.workdir / "log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", *args, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", str(self.workdir), "--save", "", "--appendonly", "no"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                assert self.proc.poll() is None, (self.workdir / "log").read_text()
                assert time.monotonic() < deadline, f"{self.name} did not start"
                time.sleep(0.05)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class SentinelGroup:
    """A master, a replica and three Sentinels, all private, on the ports they are given.

    The replica logs in to the master as a user of its own (``repl``), so that a test can stop
    it from catching up before the master dies (``stop_replication``) without touching anyone
    else's connections. (A proxy between them would not do: a Sentinel that sees a replica
    replicating from another address than the master's "fixes" it.) The Sentinels mark the
    master down after ``down_after_ms`` and agree on it by a quorum of two.
    """

    SERVICE = "apikeys-failover"
    _REPLICATION_USER = "repl"

    def __init__(self, master_port: int, replica_port: int,
                 sentinel_ports: Sequence[int], down_after_ms: int = 1000) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="apikeys-failover-redis-"))
        self.master = _Server(self.base, "master", master_port)
        self.replica = _Server(self.base, "replica", replica_port)
        self.sentinels = [_Server(self.base, f"sentinel{i}", port)
                          for i, port in enumerate(sentinel_ports, 1)]
        self.down_after_ms = down_after_ms
        self._replication_password = secrets.token_hex(16)

    @property
    def url(self) -> str:
        """The gateways' ``REDIS_URL``: the Sentinels and the service they watch."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def start(self) -> SentinelGroup:
        """Start the master, the replica (until in sync) and the Sentinels (until they know
        the replica and each other)."""
        require_free_ports([s.port for s in (self.master, self.replica, *self.sentinels)],
                           "a private Redis server")
        try:
            # No wait for more replicas before the first full sync.
            self.master.start(
                "--repl-diskless-sync-delay", "0",
                "--user", self._REPLICATION_USER, "on", f">{self._replication_password}",
                "+psync", "+replconf", "+ping",
            )
            self.replica.start(
                "--replicaof", "127.0.0.1", str(self.master.port),
                "--masteruser", self._REPLICATION_USER,
                "--masterauth", self._replication_password,
            )
            self._until(lambda: self.link_up(self.replica), "the replica is in sync")
            for sentinel in self.sentinels:
                conf = sentinel.workdir / "sentinel.conf"
                sentinel.workdir.mkdir()
                conf.write_text(
                    f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 2\n"
                    f"sentinel down-after-milliseconds {self.SERVICE} {self.down_after_ms}\n"
                    f"sentinel failover-timeout {self.SERVICE} 10000\n"
                )
                sentinel.start(str(conf), "--sentinel")
            self._until(self._watching, "every Sentinel knows the replica and the others")
        except BaseException:
            self.stop()
            raise
        return self

    def _watching(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                state = client.sentinel_master(self.SERVICE)
            if state["num-slaves"] != 1 or state["num-other-sentinels"] != len(self.sentinels) - 1:
                return False
        return True

    def stop_replication(self) -> None:
        """The replica stops receiving the master's writes (its user is refused from now on)."""
        with self.master.client() as master:
            master.acl_setuser(self._REPLICATION_USER, enabled=False)
            master.client_kill_filter(user=self._REPLICATION_USER)
        self._until(lambda: not self.link_up(self.replica), "the replica lost its master")

    def master_port(self) -> int:
        """The port of the master as the first Sentinel names it now."""
        with self.sentinels[0].client() as client:
            _host, port = client.sentinel_get_master_addr_by_name(self.SERVICE)
        return int(port)

    @staticmethod
    def link_up(replica: _Server) -> bool:
        """Whether ``replica`` is connected to its master."""
        with replica.client() as client:
            return bool(client.info("replication").get("master_link_status") == "up")

    @staticmethod
    def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop every process and remove every file."""
        for server in [*self.sentinels, self.replica, self.master]:
            server.kill()
        shutil.rmtree(self.base, ignore_errors=True)
