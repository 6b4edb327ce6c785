"""One run of compose.yaml under podman-compose, as a platform team's checkout would run it.

A :class:`Stack` is a copy of the files compose reads (compose.yaml, deploy/, the build context),
an environment of its own (a project name, host ports in 26000-26999, a network that no other
route on the host uses, the stand-in images) and the ``podman-compose`` commands of the README
in that directory. ``remove()`` takes away every container, pod, volume and network of the
project; ``sweep()`` does the same for the projects of runs that were killed.

What the engine here lacks, and what stands in for it (docs/compose-testing.md):

* No systemd, so podman's health checks have no timers: :class:`HealthChecks` runs each
  container's check at its own interval (``podman healthcheck run``, which keeps podman's
  start period and retries).
* podman-compose ignores ``depends_on: condition: service_healthy`` on podman older than 4.6
  (Debian 12 has 4.3.1): :meth:`Stack.up_in_order` starts the services in the order the
  conditions of compose.yaml give, each once its dependencies are healthy, as Docker Compose
  does. The plain ``up -d`` is run as well, to show that the stack comes up without that order.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.compose.engine import Engine, EngineError, run

__all__ = ["PREFIX", "Container", "HealthChecks", "Stack", "free_ports", "free_subnet",
           "health_checks", "sweep"]

PREFIX = "apikeys-test-"
PORTS = range(26000, 27000)
# What compose reads from a checkout: compose.yaml and its files, and the image build context.
CHECKOUT = ("compose.yaml", "Makefile", ".env.example", "pyproject.toml", "README.md",
            "deploy", "scripts", "shared", "key_service", "auth_gateway", "demo_backend")
_PROJECT_LABEL = "io.podman.compose.project"


def free_ports(count: int) -> list[int]:
    """``count`` ports of 26000-26999 that nothing listens on right now."""
    found: list[int] = []
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise AssertionError(f"fewer than {count} free ports in {PORTS}")


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 172.29.0.0/16 that no route of the host overlaps, for the stack's network."""
    routes = subprocess.run(["ip", "-4", "-j", "route", "show", "table", "all"],
                            capture_output=True, text=True, check=True).stdout
    taken = [ipaddress.ip_network(r["dst"], strict=False) for r in json.loads(routes)
             if r.get("dst", "default") != "default"]
    for third in range(100, 250):
        subnet = ipaddress.IPv4Network(f"172.29.{third}.0/24")
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise AssertionError("no free /24 in 172.29.100.0-172.29.249.0")


@dataclass(frozen=True)
class Container:
    """A container of the project, as ``podman ps`` lists it."""

    id: str
    name: str
    service: str
    state: str


class Stack:
    """A compose project of this run (see the module docstring)."""

    def __init__(self, engine: Engine, root: Path, directory: Path, env: Mapping[str, str],
                 files: tuple[str, ...]) -> None:
        self.engine = engine
        self.directory = directory
        self.name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
        self.files = files
        # Anonymous volumes (an image's VOLUME, such as redis's /data) carry no project label,
        # and podman-compose's `down` leaves them: remembered here, removed by remove().
        self._anonymous: set[str] = set()
        self.env = {**engine.env, **env, "COMPOSE_PROJECT_NAME": self.name,
                    # One podman command at a time: builds share their first stage's cache and
                    # the machine has two cores.
                    "COMPOSE_PARALLEL_LIMIT": "1"}
        directory.mkdir(parents=True)
        for name in CHECKOUT:
            source = root / name
            if source.is_dir():
                shutil.copytree(source, directory / name, symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, directory / name)

    # -- commands ------------------------------------------------------------------------------
    def compose(self, *args: str, stdin: Path | None = None, timeout: float = 900,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """``podman-compose -f compose.yaml [-f override] ARGS`` in the checkout."""
        if "down" in args:
            self._remember_anonymous_volumes()
        argv = [self.engine.podman_compose]
        for file in self.files:
            argv += ["-f", file]
        argv += list(args)
        if stdin is None:
            return run(argv, env=self.env, cwd=self.directory, timeout=timeout, check=check)
        with stdin.open() as handle:
            result = subprocess.run(argv, env=self.env, cwd=self.directory, stdin=handle,
                                    capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise EngineError(f"podman-compose {' '.join(args)} exited {result.returncode}:\n"
                              f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def make(self, target: str, venv: Path, timeout: float = 900
             ) -> subprocess.CompletedProcess[str]:
        """``make TARGET`` in the checkout, with the project's virtualenv (never reinstalled)."""
        if target == "down":
            self._remember_anonymous_volumes()
        return run(["make", "-o", str(venv / ".installed"), target, f"VENV={venv}"],
                   env=self.env, cwd=self.directory, timeout=timeout)

    def services(self) -> dict[str, dict[str, Any]]:
        """compose.yaml's services, as podman-compose reads them with this environment."""
        config: dict[str, Any] = yaml.safe_load(self.compose("config").stdout)
        services: dict[str, dict[str, Any]] = config["services"]
        return services

    def containers(self, service: str | None = None) -> list[Container]:
        """The project's containers (of one service), whatever their state, by name."""
        return _containers(self.engine, self.name, service)

    def health(self, container: Container) -> str:
        """``healthy``, ``starting``, ``unhealthy``, or ``none`` for a container without check."""
        health = self.engine.inspect(container.id)[0]["State"].get("Health") or {}
        return str(health.get("Status") or "none")

    def wait_healthy(self, services: list[str], timeout: float = 240) -> None:
        """Until every container of ``services`` is running and healthy (or raise, with logs)."""
        deadline = time.monotonic() + timeout
        while True:
            containers = {s: self.containers(s) for s in services}
            missing = [s for s, found in containers.items() if not found]
            pending = [c for found in containers.values() for c in found
                       if c.state != "running" or self.health(c) != "healthy"]
            if not missing and not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not healthy within {timeout:.0f} s: no container of "
                                     f"{missing}, {[(c.name, c.state) for c in pending]}\n"
                                     + self.logs(pending))
            time.sleep(1)

    def up_in_order(self, services: Mapping[str, Mapping[str, Any]]
                    ) -> list[tuple[list[str], float]]:
        """Start ``services`` in the order of their ``depends_on`` conditions, as Docker Compose
        does, each once its dependencies meet their condition; the waves and their times."""
        conditions = {spec["condition"] for s in services.values()
                      for spec in (s.get("depends_on") or {}).values()}
        assert conditions <= {"service_healthy"}, f"only service_healthy is done: {conditions}"
        started: set[str] = set()
        waves: list[tuple[list[str], float]] = []
        while len(started) < len(services):
            ready = sorted(name for name, spec in services.items() if name not in started
                           and set(spec.get("depends_on") or {}) <= started)
            assert ready, f"depends_on has a cycle among {set(services) - started}"
            began = time.monotonic()
            self.compose("up", "-d", "--no-deps", *ready)
            self.wait_healthy(ready)
            waves.append((ready, time.monotonic() - began))
            started.update(ready)
        return waves

    def exec_in(self, container: Container, *argv: str, stdin: str | None = None) -> str:
        """Run a command in a container; its output."""
        flags = ["-i"] if stdin is not None else []
        return self.engine.podman("exec", *flags, container.id, *argv, input=stdin).stdout

    def logs(self, containers: list[Container]) -> str:
        """The last lines each container printed, for a failure message."""
        parts = []
        for container in containers:
            out = self.engine.podman("logs", "--tail", "30", container.id, check=False)
            parts.append(f"--- {container.name}\n{out.stdout}{out.stderr}")
        return "\n".join(parts)

    def _remember_anonymous_volumes(self) -> None:
        containers = [c.id for c in self.containers()]
        if containers:
            for container in self.engine.inspect(*containers):
                self._anonymous.update(
                    m["Name"] for m in container.get("Mounts") or ()
                    if m.get("Type") == "volume" and self.name not in m.get("Name", ""))

    def remove(self) -> None:
        """Take down the project with its volumes, and everything podman-compose leaves."""
        self.compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False,
                     timeout=300)
        remove_project(self.engine, self.name)
        for volume in sorted(self._anonymous):
            self.engine.podman("volume", "rm", "--force", volume, check=False)
        _drop_empty_netavark_chains(self.engine)

    def leftovers(self) -> list[str]:
        """Whatever of this project podman still has: containers, pods, volumes (named, and
        the anonymous ones its containers had), networks."""
        volumes = set(self.engine.podman("volume", "ls", "--format", "{{.Name}}").stdout.split())
        return _project_objects(self.engine, self.name) + [
            f"volume {v}" for v in sorted(self._anonymous & volumes)]


class HealthChecks(threading.Thread):
    """Run the health checks of a project's containers at their intervals, as systemd timers
    would for podman elsewhere (see the module docstring)."""

    def __init__(self, engine: Engine, project: str) -> None:
        super().__init__(name=f"health checks of {project}", daemon=True)
        self._engine = engine
        self._project = project
        self._stopping = threading.Event()
        self._intervals: dict[str, float] = {}
        self._due: dict[str, float] = {}
        self.runs = 0

    def run(self) -> None:
        while not self._stopping.wait(0.5):
            try:
                self._tick()
            except (EngineError, subprocess.TimeoutExpired):
                continue  # a container that went away between listing and checking

    def _tick(self) -> None:
        now = time.monotonic()
        for container in _containers(self._engine, self._project, None):
            if container.state != "running":
                self._due.pop(container.id, None)
                continue
            if container.id not in self._intervals:
                check = self._engine.inspect(container.id)[0]["Config"].get("Healthcheck") or {}
                self._intervals[container.id] = (check.get("Interval") or 0) / 1e9
            interval = self._intervals[container.id]
            if not interval:
                continue
            # Like Docker, the first check one interval after the container starts.
            due = self._due.setdefault(container.id, now + interval)
            if now >= due:
                self._engine.podman("healthcheck", "run", container.id, check=False, timeout=60)
                self.runs += 1
                self._due[container.id] = time.monotonic() + interval

    def stop(self) -> None:
        """Stop checking and wait for the thread."""
        self._stopping.set()
        self.join(timeout=90)


@contextlib.contextmanager
def health_checks(engine: Engine, project: str) -> Iterator[HealthChecks]:
    """Health checks running for ``project`` for the duration of the block."""
    checks = HealthChecks(engine, project)
    checks.start()
    try:
        yield checks
    finally:
        checks.stop()


def _containers(engine: Engine, project: str, service: str | None) -> list[Container]:
    filters = ["--filter", f"label={_PROJECT_LABEL}={project}"]
    if service is not None:
        filters += ["--filter", f"label=com.docker.compose.service={service}"]
    out = engine.podman("ps", "-a", "--format", "json", *filters).stdout
    found = [Container(id=c["Id"], name=c["Names"][0], state=c["State"],
                       service=(c.get("Labels") or {}).get("com.docker.compose.service", ""))
             for c in json.loads(out or "[]")]
    return sorted(found, key=lambda c: c.name)


def _project_objects(engine: Engine, project: str) -> list[str]:
    names = [f"container {c.name}" for c in _containers(engine, project, None)]
    for kind, fmt in (("pod", "{{.Name}}"), ("volume", "{{.Name}}"), ("network", "{{.Name}}")):
        listed = engine.podman(kind, "ls", "--format", fmt).stdout.split()
        names += [f"{kind} {n}" for n in listed if project in n]
    return names


def remove_project(engine: Engine, project: str) -> None:
    """Remove every container, pod, volume and network whose name or label names ``project``."""
    for container in _containers(engine, project, None):
        engine.podman("rm", "--force", "--time", "0", container.id, check=False)
    for kind in ("pod", "volume", "network"):
        listed = engine.podman(kind, "ls", "--format", "{{.Name}}").stdout.split()
        for name in listed:
            if project in name:
                engine.podman(kind, "rm", "--force", name, check=False)


def _drop_empty_netavark_chains(engine: Engine) -> None:
    # netavark 1.4 leaves the port-forwarding chain of a removed network behind, empty: one
    # more per run. `iptables -X` deletes a chain only when it is empty and nothing jumps to it,
    # so a chain of a network still in use (ours or anyone's) stays.
    rules = run(["iptables", "-t", "nat", "-S"], env=engine.env).stdout.splitlines()
    for rule in rules:
        if rule.startswith("-N NETAVARK-DN-"):
            run(["iptables", "-t", "nat", "-X", rule.split()[1]], env=engine.env, check=False)


def sweep(engine: Engine) -> list[str]:
    """Remove what runs that were killed left of their projects; the projects removed."""
    out = engine.podman("ps", "-a", "--format", "json").stdout
    projects = {(c.get("Labels") or {}).get(_PROJECT_LABEL, "") for c in json.loads(out or "[]")}
    for kind in ("pod", "volume", "network"):
        for name in engine.podman(kind, "ls", "--format", "{{.Name}}").stdout.split():
            if PREFIX in name:
                start = name.index(PREFIX)
                projects.add(name[start:start + len(PREFIX) + 8])
    stale = sorted(p for p in projects if p.startswith(PREFIX))
    for project in stale:
        remove_project(engine, project)
    # The storage is this test's own and the caller holds its lock: a volume no container uses
    # is an anonymous one that a killed run left.
    engine.podman("volume", "prune", "--force")
    _drop_empty_netavark_chains(engine)
    return stale
