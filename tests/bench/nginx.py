"""A private nginx for the benchmark: its own prefix, config, pid, logs and temp paths.

Nothing here touches the system's nginx: every path lives under a directory the benchmark made,
and the master runs in the foreground (``daemon off``) as our child, so stopping it is stopping
a process we started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = [
    "Nginx",
    "NginxError",
    "forward_auth_server",
    "proxy_server",
    "upstream_server",
    "verdict_server",
]

UPSTREAM_BODY = "ok\n"


class NginxError(RuntimeError):
    """nginx is missing, refused its config, or did not start listening."""


def upstream_server(port: int) -> str:
    """A server that answers every request with a fixed small 200: the fast upstream."""
    return f"""
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            default_type text/plain;
            return 200 "{UPSTREAM_BODY.strip()}\\n";
        }}
    }}
"""


def _upstream_block(name: str, port: int) -> str:
    # Keep-alive to the upstream as in the shipped forward-auth example (and as the gateway
    # pools its upstream connections): every proxy compared reuses its upstream connections.
    return f"""
    upstream {name} {{
        server 127.0.0.1:{port};
        keepalive 32;
    }}
"""


def proxy_server(listen_port: int, upstream_port: int) -> str:
    """A plain reverse proxy to the upstream: the baseline every ratio is measured against."""
    return _upstream_block("plain_upstream", upstream_port) + f"""
    server {{
        listen 127.0.0.1:{listen_port} reuseport;
        location / {{
            proxy_pass http://plain_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


FORWARD_AUTH_EXAMPLE = (
    Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "forward-auth.conf"
)
# The addresses the shipped example uses, and what the benchmark puts in their place.
_EXAMPLE_LISTEN = "127.0.0.1:8000"
_EXAMPLE_GATEWAY = "server unix:/run/apikeys/gateway.sock;"
_EXAMPLE_BACKEND = "127.0.0.1:8090"


def verdict_server(port: int, unix_path: str | None = None) -> str:
    """A stand-in verdict service that costs next to nothing: nginx's own 204 with identity
    headers. In front of it, the forward-auth example shows what nginx alone can reach.

    ``unix_path``: listen on that Unix socket as well (as the gateway does in the example).
    """
    unix = f"listen unix:{unix_path};" if unix_path else ""
    return f"""
    server {{
        listen 127.0.0.1:{port} reuseport;
        {unix}
        location / {{
            add_header X-Authenticated-Key-Id 00000000-0000-7000-8000-000000000000;
            add_header X-Authenticated-Key-Name reference;
            return 204;
        }}
    }}
"""


def forward_auth_server(listen_port: int, upstream_port: int, gateway: str,
                        *, name_suffix: str = "") -> str:
    """The shipped example (deploy/nginx/forward-auth.conf) with the benchmark's addresses.

    ``gateway`` is the verdict service's address as nginx's ``server`` takes it: the gateway's
    Unix socket (``unix:/path``, as the example ships) or a TCP ``host:port``.

    Measuring the file users deploy, not a benchmark-only variant: nginx asks the gateway's
    ``/_auth/verify`` (auth_request) and proxies to the upstream. ``name_suffix`` renames the
    example's upstream blocks, so that a second copy can share one nginx.
    """
    try:
        text = FORWARD_AUTH_EXAMPLE.read_text()
    except OSError as exc:
        raise NginxError(f"cannot read the forward-auth example {FORWARD_AUTH_EXAMPLE}") from exc
    for address in (_EXAMPLE_LISTEN, _EXAMPLE_GATEWAY, _EXAMPLE_BACKEND):
        if address not in text:
            raise NginxError(
                f"{FORWARD_AUTH_EXAMPLE} no longer names {address}; update the benchmark's "
                "port substitution in tests/bench/nginx.py"
            )
    text = (text.replace(_EXAMPLE_LISTEN, f"127.0.0.1:{listen_port}")
            .replace(_EXAMPLE_GATEWAY, f"server {gateway};")
            .replace(_EXAMPLE_BACKEND, f"127.0.0.1:{upstream_port}"))
    if name_suffix:
        for name in ("apikeys_gateway", "apikeys_backend"):
            text = text.replace(name, name + name_suffix)
    return text


def _config(prefix: Path, workers: int, servers: str, access_log: bool) -> str:
    tmp = prefix / "tmp"
    log = f"{prefix / 'access.log'} combined" if access_log else "off"
    return f"""
daemon off;
worker_processes {workers};
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log {log};
    keepalive_requests 1000000;
    keepalive_timeout 65s;
    client_body_temp_path {tmp / "body"};
    proxy_temp_path {tmp / "proxy"};
    fastcgi_temp_path {tmp / "fastcgi"};
    uwsgi_temp_path {tmp / "uwsgi"};
    scgi_temp_path {tmp / "scgi"};
{servers}
}}
"""


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class Nginx:
    """One nginx master (and its workers) with everything under ``prefix``."""

    def __init__(self, prefix: Path, servers: str, *, workers: int = 1,
                 access_log: bool = False) -> None:
        self.prefix = prefix
        self.access_log = access_log
        self.servers = servers
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        """Where the generated config is written."""
        return self.prefix / "nginx.conf"

    def _args(self, *extra: str) -> list[str]:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise NginxError("nginx is not installed (Debian: apt-get install nginx)")
        return [binary, "-p", str(self.prefix), "-c", str(self.conf_path),
                "-e", str(self.prefix / "error.log"), *extra]

    def start(self, ports: list[int], timeout: float = 10.0) -> None:
        """Write the config, check it (``nginx -t``), start, and wait for ``ports`` to listen."""
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(_config(self.prefix, self.workers, self.servers, self.access_log))
        test = subprocess.run(self._args("-t", "-q"), capture_output=True, text=True, check=False)
        if test.returncode != 0:
            raise NginxError(f"nginx refused {self.conf_path}: {test.stderr.strip()}")
        log = (self.prefix / "stderr.log").open("wb")
        try:
            self.proc = subprocess.Popen(
                self._args(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not all(_listening(p) for p in ports):
            if self.proc.poll() is not None:
                raise NginxError(f"nginx exited {self.proc.returncode}: {self.error_log()}")
            if time.monotonic() > deadline:
                raise NginxError(f"nginx did not listen on {ports} in {timeout}s")
            time.sleep(0.05)

    def error_log(self) -> str:
        """The tail of nginx's error log (for failure messages)."""
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the master (and so its workers); kill the group if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
