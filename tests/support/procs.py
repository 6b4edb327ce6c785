"""Starting the project's own services as subprocesses, and waiting for them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ROOT", "ServiceProcess", "free_port", "require_free_ports", "wait_http"]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_free_ports(ports: Sequence[int], what: str) -> None:
    """Fail clearly when one of the fixed ``ports`` of ``what`` is taken already (by a server
    an interrupted run left behind, say)."""
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                raise RuntimeError(
                    f"port {port} for {what} is in use ({exc.strerror}): a server left behind "
                    "by an interrupted run? Stop it (its directory is /tmp/apikeys-failover-*)."
                ) from exc


def wait_http(url: str, timeout: float = 30.0, expect: int = 200) -> None:
    """Poll ``url`` until it answers ``expect`` or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == expect:
                    return
                last = resp.status
        except urllib.error.HTTPError as exc:
            if exc.code == expect:
                return
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {expect} within {timeout}s (last: {last})")


class ServiceProcess:
    """A ``python -m <module> ...`` subprocess with its output kept in a log file."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log_path: Path,
                 wrapper: Sequence[str] = ()) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        full_env = {**os.environ, **env}
        self.proc = subprocess.Popen(
            [*wrapper, sys.executable, *args], env=full_env, cwd=ROOT,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def output(self) -> str:
        """Everything the process printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the process group, wait, and kill it if it does not stop."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode
