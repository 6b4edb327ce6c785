"""A private three-node RabbitMQ cluster, for failover tests.

The machine's RabbitMQ is never touched. ``RabbitCluster`` starts ``rabbitmq-server`` nodes of its
own (named ``apikeys-failover-N@localhost``) with their own AMQP and distribution ports, data and
log directories under /tmp, no plugins, and an Erlang cookie of their own given through a
``HOME`` of their own (so neither the running node's cookie nor the invoking user's is read or
written). They find each other through the classic peer-discovery list in their config and form
one cluster as they start; the shared ``epmd`` is used as it is.

A node is killed (SIGKILL of its process group: a crash, with every connection reset) and
started again on the same data directory, where it rejoins the cluster.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.procs import require_free_ports

__all__ = ["RabbitCluster", "RabbitNode"]

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 120.0


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class RabbitNode:
    """One node: its name, ports and directories, and its process while it runs."""

    def __init__(self, cluster: RabbitCluster, index: int, port: int, dist_port: int) -> None:
        self.cluster = cluster
        self.name = f"apikeys-failover-{index}@localhost"
        self.port = port
        self.dist_port = dist_port
        self.home = cluster.base
        self.config = cluster.base / f"node{index}.conf"
        self.log = cluster.base / f"node{index}.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """The environment rabbitmq-server runs with."""
        base = self.cluster.base
        short = self.name.split("@")[0]
        return {
            **self.cluster.cli_env(),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.config),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / f"log-{short}"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        }

    def start(self) -> None:
        """Start the node (returns at once; ``wait_listening`` waits for its AMQP port)."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} runs already"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(RABBIT_BIN / "rabbitmq-server")], env=self.env(), cwd=self.cluster.base,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_listening(self, timeout: float = START_TIMEOUT) -> None:
        """Until the node accepts AMQP connections."""
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.output()}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the node and everything it started, as a crash would; returns once its
        ports are closed (the VM outlives its start script by a moment)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_listening(port) for port in (self.port, self.dist_port)):
            assert time.monotonic() < deadline, f"{self.name} still listens after SIGKILL"
            time.sleep(0.05)

    def output(self) -> str:
        """What the start script printed (the node's own log is in its log directory)."""
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


class RabbitCluster:
    """Three (or more) nodes on the given ports; see the module docstring."""

    def __init__(self, ports: Sequence[int], dist_ports: Sequence[int],
                 cli_ports: tuple[int, int]) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="apikeys-failover-rabbitmq-"))
        self.cli_ports = cli_ports
        self.nodes = [RabbitNode(self, i + 1, port, dist)
                      for i, (port, dist) in enumerate(zip(ports, dist_ports, strict=True))]

    @property
    def url(self) -> str:
        """``RABBITMQ_URL`` naming every node, in order."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"amqp://guest:guest@{hosts}/"

    def cli_env(self) -> dict[str, str]:
        """What rabbitmqctl needs to reach the nodes (the cookie, through HOME)."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.base),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self.cli_ports[0]),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(self.cli_ports[1]),
        }

    def ctl(self, node: RabbitNode, *args: str, timeout: float = 90.0) -> str:
        """``rabbitmqctl -n <node> args``; its output, or RuntimeError."""
        done = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", node.name, *args], env=self.cli_env(),
            cwd=self.base, capture_output=True, text=True, timeout=timeout, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> RabbitCluster:
        """Write the configs, start every node at once and wait until they form one cluster."""
        require_free_ports([p for n in self.nodes for p in (n.port, n.dist_port)],
                           "a private RabbitMQ node")
        try:
            cookie = self.base / ".erlang.cookie"
            cookie.write_text(secrets.token_hex(20))
            cookie.chmod(0o400)
            (self.base / "rabbitmq-env.conf").write_text("")
            (self.base / "enabled_plugins").write_text("[].\n")
            peers = "".join(
                f"cluster_formation.classic_config.nodes.{i} = {node.name}\n"
                for i, node in enumerate(self.nodes, 1)
            )
            for node in self.nodes:
                node.config.write_text(
                    f"listeners.tcp.default = 127.0.0.1:{node.port}\n"
                    "cluster_formation.peer_discovery_backend = classic_config\n"
                    f"{peers}"
                )
                node.start()
            for node in self.nodes:
                node.wait_listening()
            self.wait_clustered()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_clustered(self) -> None:
        """Until every node runs in the cluster."""
        running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        self.ctl(running[0], "await_online_nodes", str(len(self.nodes)), "--timeout",
                 str(int(START_TIMEOUT)), timeout=START_TIMEOUT + 30)

    def restart(self, node: RabbitNode) -> None:
        """Start a killed node again on its data and wait until it is back in the cluster."""
        node.start()
        node.wait_listening()
        self.wait_clustered()

    def stop(self) -> None:
        """Kill every node and remove every file."""
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.base, ignore_errors=True)
