"""Debian's podman, configured for the compose test alone.

Nothing under /etc is edited: ``CONTAINERS_CONF`` and ``CONTAINERS_STORAGE_CONF`` point podman
at two files written here, and podman then reads no other configuration. Why each setting (the
machine kind these tests run on, docs/compose-testing.md):

* ``runtime = "runc"``, ``cgroup_manager = "cgroupfs"``: podman's default crun refuses the
  machine's hybrid cgroup v1 hierarchy, and there is no systemd to manage cgroups.
* ``default_ulimits``: podman's defaults are above the machine's hard limits.
* ``events_logger = "file"``: there is no journald.
* Images and volumes live in a cache directory that outlives the run (the stand-in images are
  built once per machine); podman's run state (``tmp_dir``, ``runroot``) lives on a tmpfs, as
  podman requires, so that a reboot forgets containers that no longer run.
* The static directory is not set: it must stay ``<graphroot>/libpod``, because podman hands
  its exit command (the container's cleanup) ``--root`` but not the static directory.

There is no systemd either to run health checks on timers: ``tests/compose/stack.py`` runs
them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CACHE", "Engine", "exclusive", "prepare"]

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "apikeys-compose-test"
_RUN = Path("/dev/shm/apikeys-compose-test")

_CONTAINERS_CONF = """\
# Written by tests/compose/engine.py for the compose test; see its docstring.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{state}/events.log"
tmp_dir = "{run}/libpod"

[network]
network_backend = "netavark"
network_config_dir = "{state}/networks"
"""

_STORAGE_CONF = """\
# Written by tests/compose/engine.py for the compose test; see its docstring.
[storage]
driver = "overlay"
graphroot = "{state}/storage"
runroot = "{run}/storage"
"""


class EngineError(AssertionError):
    """podman (or a tool beside it) failed; the message holds what it printed."""


@dataclass(frozen=True)
class Engine:
    """How to run podman, and podman-compose, with the test's own configuration."""

    env: Mapping[str, str]
    podman_compose: str

    def podman(self, *args: str, input: str | None = None, check: bool = True,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run ``podman ARGS``; with ``check``, a failure raises with podman's output."""
        return run(["podman", *args], env=self.env, input=input, check=check, timeout=timeout)

    def inspect(self, *names: str, kind: str = "container") -> list[dict[str, Any]]:
        """``podman inspect`` of containers or images, parsed."""
        out = self.podman(kind, "inspect", *names).stdout
        data: list[dict[str, Any]] = json.loads(out)
        return data

    def versions(self) -> str:
        """One line naming the engine, the runtime and podman-compose, with their versions."""
        podman = self.podman("version", "--format", "{{.Client.Version}}").stdout.strip()
        runtime = run(["runc", "--version"], env=self.env).stdout.splitlines()[0]
        compose = run([self.podman_compose, "--version"], env=self.env).stdout.splitlines()[0]
        return f"podman {podman}, {runtime}, {compose}"

    def podman_version(self) -> tuple[int, ...]:
        """podman's version as numbers, e.g. ``(4, 3, 1)``."""
        text = self.podman("version", "--format", "{{.Client.Version}}").stdout.strip()
        return tuple(int(part) for part in text.split("-")[0].split(".")[:3])


def run(argv: Sequence[str], *, env: Mapping[str, str], input: str | None = None,
        check: bool = True, timeout: float = 600, cwd: Path | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; with ``check``, fail with what it printed."""
    result = subprocess.run(list(argv), env=dict(env), input=input, capture_output=True,
                            text=True, timeout=timeout, cwd=cwd,
                            stdin=None if input is not None else subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise EngineError(f"{' '.join(argv[:4])} ... exited {result.returncode}:\n"
                          f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def prepare(bin_dir: Path) -> Engine:
    """Write the test's podman configuration and return the engine that uses it.

    ``bin_dir`` is where podman-compose is installed (the project's virtualenv).
    """
    for tool in ("podman", "runc", "debootstrap"):
        assert shutil.which(tool), f"{tool} is not installed (scripts/debian-packages.sh)"
    podman_compose = bin_dir / "podman-compose"
    assert podman_compose.exists(), "podman-compose is missing (pip install -e '.[test]')"
    state = CACHE
    state.mkdir(parents=True, exist_ok=True)
    _RUN.mkdir(mode=0o700, parents=True, exist_ok=True)
    containers_conf = state / "containers.conf"
    storage_conf = state / "storage.conf"
    containers_conf.write_text(_CONTAINERS_CONF.format(state=state, run=_RUN))
    storage_conf.write_text(_STORAGE_CONF.format(state=state, run=_RUN))
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(containers_conf),
        "CONTAINERS_STORAGE_CONF": str(storage_conf),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return Engine(env=env, podman_compose=str(podman_compose))


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """Hold the machine's compose-test lock: one run at a time builds and tags images."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
