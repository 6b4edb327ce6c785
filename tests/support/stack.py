"""The whole product as subprocesses, for end-to-end, fault and failover tests.

``Stack`` starts key_service (migrated by ``create-admin``, with one administrator) on a SQLite
file of the test's own, the demo backend, and several single-worker gateway processes on distinct
ports, all with fresh deployment secrets, the test's own exchange name and Redis prefix. The
gateways reach Redis, RabbitMQ and key_service through fault proxies, so a test can cut any of
them; key_service reaches RabbitMQ through the same proxy as the gateways (a broker outage is an
outage for everyone), while the test itself talks to key_service directly. ``StackOptions`` may
give key_service another database and the services other brokers and another Redis instead (the
failover tests' private clusters); ``new_stack`` makes a stack with names of its own.

``Admin`` drives key_service's JSON API as an administrator; ``Stack.backend_stats`` reads what
the demo backend received.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from apikeys_shared.config import generate_secrets
from tests.support.faultproxy import FaultProxy
from tests.support.procs import ROOT, ServiceProcess, free_port, wait_http
from tests.support.services import RABBITMQ, REDIS, delete_exchange, delete_redis_prefix

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USER",
    "Admin",
    "Stack",
    "StackOptions",
    "clean_up_after",
    "credentials",
    "eventually",
    "metric",
    "new_stack",
]

ADMIN_USER = "e2e-admin"
ADMIN_PASSWORD = "correct horse battery staple"
START_TIMEOUT = 40.0


@dataclass(frozen=True)
class StackOptions:
    """How the stack is shaped; the defaults suit the end-to-end suite."""

    gateways: int = 2
    # Worker processes per gateway (sharing its port).
    workers: int = 1
    feed_poll_interval: float = 0.5
    # The failed-authentication throttle is tested on its own; here every request of the load
    # comes from 127.0.0.1 and must be judged on its credentials alone.
    failed_auth_threshold: int = 1_000_000
    extra_gateway_env: Mapping[str, str] = field(default_factory=dict)
    # Where key_service keeps its keys: None for a SQLite file of the stack's own.
    database_url: str | None = None
    # The brokers and the Redis of the stack: None for the machine's own, through the stack's
    # fault proxies.
    rabbitmq_url: str | None = None
    redis_url: str | None = None


class Stack:
    """key_service, the demo backend and N gateways, started in ``start()`` and stopped in
    ``stop()``; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        secrets: Mapping[str, str],
        *,
        exchange: str,
        redis_prefix: str,
        queue_prefix: str,
        options: StackOptions | None = None,
    ) -> None:
        self.workdir = workdir
        self.secrets = dict(secrets)
        self.exchange = exchange
        self.redis_prefix = redis_prefix
        self.queue_prefix = queue_prefix
        self.options = options or StackOptions()
        self.processes: list[ServiceProcess] = []
        self.gateway_procs: list[ServiceProcess] = []
        self.gateway_urls: list[str] = []
        self.key_service_url = ""
        self.backend_url = ""
        self.redis_proxy = FaultProxy(*REDIS.address)
        self.rabbit_proxy = FaultProxy(*RABBITMQ.address)
        self.key_service_proxy: FaultProxy | None = None

    @property
    def proxies(self) -> list[FaultProxy]:
        """Every fault proxy of the stack."""
        found = [self.redis_proxy, self.rabbit_proxy, self.key_service_proxy]
        return [p for p in found if p is not None]

    def restore_all(self) -> None:
        """End every injected fault."""
        for proxy in self.proxies:
            proxy.restore()

    # -- life cycle -------------------------------------------------------------------------
    @property
    def rabbitmq_url(self) -> str:
        """RabbitMQ as every service of the stack sees it (by default through the proxy)."""
        return self.options.rabbitmq_url or f"amqp://guest:guest@127.0.0.1:{self.rabbit_proxy.port}/"

    @property
    def redis_url(self) -> str:
        """Redis as the gateways see it (by default through the proxy)."""
        return self.options.redis_url or f"redis://127.0.0.1:{self.redis_proxy.port}/0"

    def start(self) -> Stack:
        """Start everything and wait until every gateway is ready; returns self."""
        try:
            self._start_key_service()
            self._start_backend()
            self._start_gateways()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process (gateways first), SIGTERM then SIGKILL, then the proxies."""
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        for proxy in self.proxies:
            proxy.close()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, args: list[str], env: Mapping[str, str], stdin: str | None = None) -> None:
        result = subprocess.run(
            [sys.executable, *args], env={**_base_env(), **env}, cwd=ROOT, input=stdin,
            capture_output=True, text=True, timeout=60, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> ServiceProcess:
        proc = ServiceProcess(args, {**_base_env(), **env}, self.workdir / f"{name}.log")
        self.processes.append(proc)
        return proc

    def _wait(self, proc: ServiceProcess, url: str) -> None:
        try:
            wait_http(url, timeout=START_TIMEOUT)
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n--- {proc.log_path.name} ---\n{proc.output()[-4000:]}") \
                from exc

    def key_service_env(self) -> dict[str, str]:
        """key_service's environment."""
        data = self.workdir / "key_service"
        return {
            **self.secrets,
            "KEY_SERVICE_DATA_DIR": str(data),
            "KEY_SERVICE_DATABASE_URL": (
                self.options.database_url or f"sqlite+aiosqlite:///{data / 'keys.db'}"
            ),
            "RABBITMQ_URL": self.rabbitmq_url,
            "APIKEYS_EXCHANGE": self.exchange,
        }

    def _start_key_service(self) -> None:
        env = self.key_service_env()
        # create-admin migrates a new database first, as ``migrate`` would.
        self._run(
            ["-m", "key_service", "create-admin", "--username", ADMIN_USER, "--password-stdin"],
            env, stdin=ADMIN_PASSWORD + "\n",
        )
        port = free_port()
        proc = self._spawn(
            "key_service", ["-m", "key_service", "serve", "--port", str(port)],
            {**env, "KEY_SERVICE_PORT": str(port)},
        )
        self.key_service_url = f"http://127.0.0.1:{port}"
        self._wait(proc, f"{self.key_service_url}/healthz")
        self.key_service_proxy = FaultProxy("127.0.0.1", port)

    def _start_backend(self) -> None:
        port = free_port()
        proc = self._spawn(
            "demo_backend", ["-m", "demo_backend", "--host", "127.0.0.1", "--port", str(port)], {}
        )
        self.backend_url = f"http://127.0.0.1:{port}"
        self._wait(proc, f"{self.backend_url}/_demo/stats")

    def routes_file(self) -> Path:
        """The route table: ``/api`` needs a key, ``/public`` does not; both to the backend."""
        path = self.workdir / "routes.toml"
        path.write_text(
            "[[route]]\n"
            'prefix = "/api"\n'
            f'upstream = "{self.backend_url}"\n'
            'auth = "required"\n'
            "\n"
            "[[route]]\n"
            'prefix = "/public"\n'
            f'upstream = "{self.backend_url}"\n'
            'auth = "none"\n'
        )
        return path

    def gateway_env(self) -> dict[str, str]:
        """The environment every gateway process gets (its port added per process)."""
        assert self.key_service_proxy is not None
        return {
            **self.secrets,
            "GATEWAY_ROUTES": str(self.routes_file()),
            "KEY_SERVICE_URL": f"http://127.0.0.1:{self.key_service_proxy.port}",
            "REDIS_URL": self.redis_url,
            "RABBITMQ_URL": self.rabbitmq_url,
            "APIKEYS_EXCHANGE": self.exchange,
            "GATEWAY_REDIS_PREFIX": self.redis_prefix,
            "GATEWAY_QUEUE_PREFIX": self.queue_prefix,
            "GATEWAY_FEED_POLL_INTERVAL": str(self.options.feed_poll_interval),
            "GATEWAY_FAILED_AUTH_THRESHOLD": str(self.options.failed_auth_threshold),
            "GATEWAY_SHUTDOWN_TIMEOUT": "2",
            **self.options.extra_gateway_env,
        }

    def _start_gateways(self) -> None:
        started = [self._spawn_gateway() for _ in range(self.options.gateways)]
        for proc, url in started:
            self._wait(proc, f"{url}/readyz")

    def _spawn_gateway(self, extra_env: Mapping[str, str] | None = None,
                       ) -> tuple[ServiceProcess, str]:
        port = free_port()
        proc = self._spawn(
            f"gateway{len(self.gateway_procs)}",
            ["-m", "auth_gateway", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(self.options.workers)],
            {**self.gateway_env(), "GATEWAY_PORT": str(port), **(extra_env or {})},
        )
        self.gateway_procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        self.gateway_urls.append(url)
        return proc, url

    def add_gateway(self, extra_env: Mapping[str, str] | None = None) -> str:
        """Start one more gateway process (``extra_env`` on top of the others' environment)
        and wait until it is ready; its URL."""
        proc, url = self._spawn_gateway(extra_env)
        self._wait(proc, f"{url}/readyz")
        return url

    # -- reading the backend ----------------------------------------------------------------
    def backend_stats(self) -> dict[str, Any]:
        """The demo backend's ``/_demo/stats`` (what it received)."""
        with urllib.request.urlopen(f"{self.backend_url}/_demo/stats", timeout=5) as resp:
            stats: dict[str, Any] = json.loads(resp.read())
        return stats

    def logs(self) -> str:
        """Every process's output so far, for failure messages."""
        return "\n".join(
            f"--- {p.log_path.name} ---\n{p.output()[-3000:]}" for p in self.processes
        )


def new_stack(workdir: Path, options: StackOptions | None = None) -> Stack:
    """A stack (not started yet) with fresh secrets and an exchange, a Redis prefix and queue
    names of its own."""
    tag = uuid.uuid4().hex[:12]
    return Stack(
        workdir, generate_secrets(), exchange=f"t.{tag}.apikeys.events",
        redis_prefix=f"t:{tag}:", queue_prefix=f"t.{tag}", options=options,
    )


def clean_up_after(stack: Stack) -> None:
    """Delete what a stopped stack left in the machine's Redis and RabbitMQ."""
    if stack.options.redis_url is None:
        delete_redis_prefix(stack.redis_prefix)
    if stack.options.rabbitmq_url is None:
        asyncio.run(delete_exchange(stack.exchange))


def _base_env() -> dict[str, str]:
    # Quiet, unbuffered children; nothing inherited that could point them elsewhere.
    return {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


class Admin:
    """An administrator's session on key_service's JSON API."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url
        self._csrf = ""

    async def login(self) -> Admin:
        """Log in as the stack's administrator; returns self."""
        async with self._session.post(
            f"{self._base}/api/v1/session",
            json={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
        ) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        self._csrf = body["csrf_token"]
        return self

    async def issue(self, name: str = "e2e key") -> tuple[str, str]:
        """Issue a key; ``(key_id, secret)``."""
        status, body, _ = await self.try_issue(name)
        assert status == 201, body
        return body["key_id"], body["secret"]

    async def roll(self, key_id: str, overlap_seconds: int) -> dict[str, Any]:
        """Roll a key; the replacement (with its secret) and ``replaced_key``."""
        async with self._session.post(
            f"{self._base}/api/v1/keys/{key_id}/roll", json={"overlap_seconds": overlap_seconds},
            headers={"X-CSRF-Token": self._csrf},
        ) as resp:
            body: dict[str, Any] = await resp.json()
            assert resp.status == 201, body
        return body

    async def revoke(self, key_id: str) -> None:
        """Revoke a key (it must be active)."""
        status, body, _ = await self.try_revoke(key_id)
        assert status == 200, body

    async def try_issue(self, name: str) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """Ask to issue a key; the status, JSON body and headers, whatever they are."""
        return await self._post("/api/v1/keys", {"name": name})

    async def try_revoke(
        self, key_id: str, wait: float | None = None,
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """Ask to revoke a key (with ``?wait=``); the status, JSON body and headers."""
        query = "" if wait is None else f"?wait={wait}"
        return await self._post(f"/api/v1/keys/{key_id}/revoke{query}", None)

    async def usage(self, key_id: str) -> dict[str, Any]:
        """A key's usage (``GET /api/v1/keys/{key_id}/usage``)."""
        async with self._session.get(f"{self._base}/api/v1/keys/{key_id}/usage") as resp:
            body: dict[str, Any] = await resp.json()
            assert resp.status == 200, body
        return body

    async def try_get(self, key_id: str) -> tuple[int, dict[str, Any]]:
        """Ask for one key; the status and JSON body, whatever they are."""
        async with self._session.get(f"{self._base}/api/v1/keys/{key_id}") as resp:
            body: dict[str, Any] = await resp.json(content_type=None)
            return resp.status, body

    async def _post(self, path: str, payload: dict[str, str] | None,
                    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        async with self._session.post(
            f"{self._base}{path}", json=payload, headers={"X-CSRF-Token": self._csrf},
        ) as resp:
            body: dict[str, Any] = await resp.json(content_type=None)
            return resp.status, body, dict(resp.headers)


def credentials(key_id: str, secret: str) -> dict[str, str]:
    """The two credential headers."""
    return {"X-AuthenticationKeyId": key_id, "X-AuthenticationKeyValue": secret}


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0
) -> None:
    """Wait (with a generous bound; this is no timing assertion) until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


async def metric(
    http: aiohttp.ClientSession, gateway_url: str, name: str, labels: Mapping[str, str]
) -> float:
    """The sum of a gateway process's ``/metrics`` samples named ``name`` that carry ``labels``
    (0 when there are none)."""
    async with http.get(f"{gateway_url}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += float(sample.value)
    return total
