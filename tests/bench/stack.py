"""The benchmark's own stack: key_service on SQLite, gateways, nginx, all as our subprocesses.

Redis and RabbitMQ are the local ones, used under names nobody else uses (a fresh Redis key
prefix, exchange and queue prefix), and everything made under those names is removed when the
stack closes, as are the processes and the temporary directory, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from apikeys_shared.config import DEFAULT_RABBITMQ_URL, DEFAULT_REDIS_URL, generate_secrets
from key_service.config import KeyServiceConfig
from key_service.config import load_config as load_key_service_config
from tests.support.procs import ROOT, ServiceProcess, free_port, wait_http

from .admin import AdminClient
from .nginx import Nginx

__all__ = ["BenchStack", "StackError"]

ADMIN_USER = "bench-admin"


class StackError(RuntimeError):
    """A part of the stack did not start."""


def _secrets() -> dict[str, str]:
    return generate_secrets()


class BenchStack:
    """Starts the parts on demand and stops every one of them on ``close()``."""

    def __init__(self) -> None:
        self.redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
        self.rabbitmq_url = os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
        self.tag = f"bench-{uuid.uuid4().hex[:10]}"
        self.dir = Path(tempfile.mkdtemp(prefix="apikeys-bench-"))
        # Unix sockets (the gateway's, the reference verdict service's) live apart from the
        # rest: nginx's workers run as another user, and may pass through this directory only.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="apikeys-bench-sockets-"))
        self.socket_dir.chmod(0o711)
        self.secrets = _secrets()
        self.exchange = f"{self.tag}.events"
        self.redis_prefix = f"{self.tag}:"
        self._procs: list[ServiceProcess] = []
        self._nginx: list[Nginx] = []
        self.key_service_port = 0
        # From spawning key_service to its /readyz answering 200.
        self.key_service_start_seconds = 0.0
        self._admin_password = uuid.uuid4().hex + uuid.uuid4().hex

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> BenchStack:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- parts ----------------------------------------------------------------------------
    def _common_env(self) -> dict[str, str]:
        return {
            **self.secrets,
            "REDIS_URL": self.redis_url,
            "RABBITMQ_URL": self.rabbitmq_url,
            "APIKEYS_EXCHANGE": self.exchange,
            "PYTHONUNBUFFERED": "1",
        }

    def _ks_env(self) -> dict[str, str]:
        data = self.dir / "key_service"
        data.mkdir(exist_ok=True)
        return {
            **self._common_env(),
            "KEY_SERVICE_DATA_DIR": str(data),
            "KEY_SERVICE_DATABASE_URL": f"sqlite+aiosqlite:///{data / 'keys.db'}",
            "KEY_SERVICE_LOG_LEVEL": "WARNING",
        }

    def start_key_service(
        self, before_serve: Callable[[KeyServiceConfig], None] | None = None,
    ) -> None:
        """Create the administrator, then serve key_service; waits for ``/readyz``.

        ``before_serve`` is given key_service's configuration once its database is migrated
        (to fill it, say), before key_service starts.
        """
        env = {**os.environ, **self._ks_env()}
        made = subprocess.run(
            [sys.executable, "-m", "key_service", "create-admin", "--username", ADMIN_USER,
             "--password-stdin"],
            input=self._admin_password + "\n", env=env, cwd=ROOT, capture_output=True,
            text=True, timeout=120, check=False,
        )
        if made.returncode != 0:
            raise StackError(f"key_service create-admin failed: {made.stderr.strip()}")
        if before_serve is not None:
            before_serve(load_key_service_config(self._ks_env()))
        self.key_service_port = free_port()
        started = time.perf_counter()
        proc = ServiceProcess(
            ["-m", "key_service", "serve", "--host", "127.0.0.1",
             "--port", str(self.key_service_port)],
            self._ks_env(), self.dir / "key_service.log",
        )
        self._procs.append(proc)
        self._wait(proc, f"http://127.0.0.1:{self.key_service_port}/readyz", "key_service")
        self.key_service_start_seconds = time.perf_counter() - started

    def admin(self) -> AdminClient:
        """A logged-in administrator client of this stack's key_service."""
        client = AdminClient("127.0.0.1", self.key_service_port)
        client.login(ADMIN_USER, self._admin_password)
        return client

    def write_routes(self, upstream_port: int) -> Path:
        """The gateway's route table: ``/auth`` needs a key, ``/open`` does not."""
        path = self.dir / "routes.toml"
        path.write_text(
            "[[route]]\n"
            'prefix = "/auth"\n'
            f'upstream = "http://127.0.0.1:{upstream_port}"\n'
            'auth = "required"\n'
            "strip_prefix = true\n\n"
            "[[route]]\n"
            'prefix = "/open"\n'
            f'upstream = "http://127.0.0.1:{upstream_port}"\n'
            'auth = "none"\n'
            "strip_prefix = true\n"
        )
        return path

    def start_gateway(self, routes: Path, *, workers: int, name: str,
                      wrapper: Sequence[str] = (), extra_env: Mapping[str, str] | None = None,
                      ready_timeout: float = 60,
                      module: str = "auth_gateway") -> tuple[int, ServiceProcess]:
        """Serve a gateway with ``workers`` processes on a fresh port; waits for ``/readyz``.

        ``wrapper`` is a command the gateway runs under (valgrind, say); ``module`` the one
        that serves it (``tests.bench.public_server``: on aiohttp's own low-level server).
        """
        port = free_port()
        env = {
            **self._common_env(),
            "GATEWAY_ROUTES": str(routes),
            "KEY_SERVICE_URL": f"http://127.0.0.1:{self.key_service_port}",
            "GATEWAY_REDIS_PREFIX": self.redis_prefix,
            "GATEWAY_QUEUE_PREFIX": f"{self.tag}.gateway",
            # The timing probe sends thousands of failing requests from one address on purpose;
            # the per-address lockout would otherwise answer 429 before any lookup.
            "GATEWAY_FAILED_AUTH_THRESHOLD": "1000000",
            **(extra_env or {}),
        }
        proc = ServiceProcess(
            ["-m", module, "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            env, self.dir / f"gateway-{name}.log", wrapper=wrapper,
        )
        self._procs.append(proc)
        self._wait(proc, f"http://127.0.0.1:{port}/readyz", f"gateway {name}", ready_timeout)
        return port, proc

    def stop_process(self, proc: ServiceProcess) -> None:
        """Stop one process started here (to free the CPU for the next phase)."""
        if proc in self._procs:
            self._procs.remove(proc)
        proc.stop()

    def start_nginx(self, name: str, servers: str, ports: list[int], workers: int,
                    access_log: bool = False) -> Nginx:
        """An nginx of our own with ``servers`` in its http block; waits for ``ports``."""
        nginx = Nginx(self.dir / f"nginx-{name}", servers, workers=workers,
                      access_log=access_log)
        self._nginx.append(nginx)
        nginx.start(ports)
        return nginx

    def _wait(self, proc: ServiceProcess, url: str, what: str, timeout: float = 60) -> None:
        try:
            wait_http(url, timeout=timeout)
        except TimeoutError as exc:
            code = proc.proc.poll()
            state = "running" if code is None else f"exited {code}"
            raise StackError(
                f"{what} did not become ready ({state}); its output:\n{proc.output()[-3000:]}"
            ) from exc

    # -- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process, remove this run's Redis keys and AMQP names and the temp dir."""
        # A second Ctrl-C must not cut the cleanup short and leave processes behind.
        previous = {sig: signal.signal(sig, signal.SIG_IGN)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _close(self) -> None:
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                proc.stop()
        self._procs.clear()
        for nginx in reversed(self._nginx):
            with contextlib.suppress(Exception):
                nginx.stop()
        self._nginx.clear()
        with contextlib.suppress(Exception):
            asyncio.run(self._clean_services())
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    async def _clean_services(self) -> None:
        import aio_pika
        import redis.asyncio as aioredis

        client = aioredis.from_url(self.redis_url)
        try:
            batch: list[bytes] = []
            async for key in client.scan_iter(match=f"{self.redis_prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    await client.delete(*batch)
                    batch.clear()
            if batch:
                await client.delete(*batch)
        finally:
            await client.aclose()
        # Gateway queues are exclusive and auto-delete: they went with their connections.
        connection = await aio_pika.connect(self.rabbitmq_url, timeout=10)
        try:
            channel = await connection.channel()
            await channel.exchange_delete(self.exchange)
        finally:
            await connection.close()
