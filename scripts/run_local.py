"""``make run``: the whole stack on this machine, until Ctrl-C.

Starts, each in its own process group, and stops again on SIGINT or SIGTERM:

* the demo echo backend            DEMO_BACKEND_HOST:DEMO_BACKEND_PORT  (127.0.0.1:8090)
* key_service (SQLite in the data  KEY_SERVICE_HOST:KEY_SERVICE_PORT    (127.0.0.1:8081)
  directory; Backoffice page, JSON API)
* one gateway with GATEWAY_WORKERS GATEWAY_HOST:GATEWAY_PORT            (127.0.0.1:8080)
  worker processes (2) routing every path to the demo backend

against the Redis of REDIS_URL and the RabbitMQ of RABBITMQ_URL (the local defaults). The data
directory (KEY_SERVICE_DATA_DIR, default ``data/`` in the checkout) keeps the SQLite database, the
deployment secrets (``secrets.env``, mode 600, generated on the first run and reused), the
gateway's route table and one log file per service. The administrator is ADMIN_USERNAME (default
``admin``) with ADMIN_PASSWORD, or a generated password printed once.

It imports only the project's settings (``config`` modules), no service code: it runs before
anything is known to work, and says what is missing rather than failing inside a service.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "shared")]  # run as a script from a checkout

from apikeys_shared import config as shared  # noqa: E402
from apikeys_shared.errors import ConfigError  # noqa: E402
from apikeys_shared.settings import Catalogue, Env, Setting  # noqa: E402
from auth_gateway import config as gateway_config  # noqa: E402
from key_service import config as key_service_config  # noqa: E402

DEMO_BACKEND_HOST: Setting[str] = Setting(
    "DEMO_BACKEND_HOST", "127.0.0.1", "the demo backend's address (`python -m demo_backend "
    "--host`)")
DEMO_BACKEND_PORT: Setting[int] = Setting(
    "DEMO_BACKEND_PORT", 8090, "the demo backend's port (`--port`)", 1, 65535)
WORKERS: Setting[int] = Setting(
    gateway_config.WORKERS.name, 2, "the gateway's worker processes under `make run`", 1, 256)
SHUTDOWN_TIMEOUT: Setting[float] = Setting(
    gateway_config.SHUTDOWN_TIMEOUT.name, 5.0,
    "the gateway's drain time under `make run` (Ctrl-C)", 0, 3600)
ADMIN_USERNAME: Setting[str] = Setting(
    "ADMIN_USERNAME", "admin", "the administrator `make run` creates (once)")
ADMIN_PASSWORD: Setting[str | None] = Setting(
    "ADMIN_PASSWORD", None, "that administrator's password",
    shown="generated, printed once")

SETTINGS = Catalogue.of("make run", (
    "`scripts/run_local.py` reads these besides the services' own variables, and passes the "
    "services' addresses on to them."
), (DEMO_BACKEND_HOST, DEMO_BACKEND_PORT, WORKERS, SHUTDOWN_TIMEOUT, ADMIN_USERNAME,
    ADMIN_PASSWORD))
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
REDIS_START = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'
RABBITMQ_START = "rabbitmq-server -detached   (Debian: apt-get install rabbitmq-server)"


class Stop(Exception):
    """SIGINT or SIGTERM arrived: leave whatever we are doing and shut down."""


class Failure(Exception):
    """Something this script cannot go on without; the message says what and what to do."""


@dataclass(frozen=True)
class Settings:
    """Addresses and places, from the environment."""

    data_dir: Path
    demo_host: str
    demo_port: int
    key_service_host: str
    key_service_port: int
    gateway_host: str
    gateway_port: int
    gateway_workers: int
    gateway_shutdown_timeout: float
    redis_url: str
    rabbitmq_url: str
    admin_username: str
    admin_password: str | None


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Read every variable this script uses; Failure names a bad one."""
    env = Env(environ)
    try:
        data_dir = Path(key_service_config.DATA_DIR.text(env))
        return Settings(
            data_dir=data_dir if data_dir.is_absolute() else ROOT / data_dir,
            demo_host=DEMO_BACKEND_HOST.text(env),
            demo_port=DEMO_BACKEND_PORT.integer(env),
            key_service_host=key_service_config.HOST.text(env),
            key_service_port=key_service_config.PORT.integer(env),
            gateway_host=gateway_config.HOST.text(env),
            gateway_port=gateway_config.PORT.integer(env),
            gateway_workers=WORKERS.integer(env),
            gateway_shutdown_timeout=SHUTDOWN_TIMEOUT.number(env),
            redis_url=shared.REDIS_URL.text(env),
            rabbitmq_url=shared.RABBITMQ_URL.text(env),
            admin_username=ADMIN_USERNAME.text(env),
            admin_password=environ.get(ADMIN_PASSWORD.name) or None,
        )
    except ConfigError as exc:
        raise Failure(str(exc)) from None


# -- Redis and RabbitMQ ------------------------------------------------------------------------
def _connect(url: str, default_port: int) -> socket.socket:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(3)
        sock.connect(parts.path)
        return sock
    host = parts.hostname or "127.0.0.1"
    return socket.create_connection((host, parts.port or default_port), timeout=3)


def _where(url: str, default_port: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or default_port}"


def check_redis(url: str) -> None:
    """Raise Failure unless a Redis server answers at ``url``."""
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "unix"):
        return  # TLS, Sentinel or Cluster: the gateway checks those itself when it starts.
    where = _where(url, 6379)
    try:
        with _connect(url, 6379) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError as exc:
        raise Failure(
            f"Redis is not reachable at {where} ({exc}).\n"
            f"  Start it with:  {REDIS_START}\n"
            "  or point REDIS_URL at yours."
        ) from exc
    # +PONG, or an error asking for a password: either way a Redis server is there.
    if not reply.startswith((b"+PONG", b"-NOAUTH", b"-ERR")):
        raise Failure(f"something that is not Redis answers at {where} (REDIS_URL)")


def check_rabbitmq(url: str) -> None:
    """Raise Failure unless an AMQP 0-9-1 broker answers at ``url``."""
    if urlsplit(url).scheme != "amqp":
        return  # amqps: the services check the TLS connection themselves.
    if "," in urlsplit(url).netloc.rpartition("@")[2]:
        return  # several nodes: the services try each of them in turn themselves.
    where = _where(url, 5672)
    try:
        with _connect(url, 5672) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            reply = sock.recv(8)
    except OSError as exc:
        raise Failure(
            f"RabbitMQ is not reachable at {where} ({exc}).\n"
            f"  Start it with:  {RABBITMQ_START}\n"
            "  or point RABBITMQ_URL at yours."
        ) from exc
    # A broker answers the protocol header with a method frame (Connection.Start).
    if not reply.startswith(b"\x01\x00\x00"):
        raise Failure(f"something that is not RabbitMQ answers at {where} (RABBITMQ_URL)")


def check_port_free(host: str, port: int, variable: str) -> None:
    """Raise Failure naming ``variable`` when something already listens on ``host:port``."""
    with socket.socket() as sock:
        # As the services bind: connections of an earlier run in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise Failure(
                f"{host}:{port} is already in use ({exc.strerror}); stop what listens there or "
                f"choose another port with {variable}=..."
            ) from exc


# -- the data directory -----------------------------------------------------------------------
def _python_env(base: Mapping[str, str]) -> dict[str, str]:
    # The checkout's own code first, whatever the virtualenv was installed from.
    paths = [str(ROOT), str(ROOT / "shared")]
    if base.get("PYTHONPATH"):
        paths.append(base["PYTHONPATH"])
    return {**base, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def _parse_env_file(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def load_or_make_secrets(data_dir: Path, env: Mapping[str, str]) -> tuple[dict[str, str], bool]:
    """The deployment secrets of this data directory: ``(values, made just now)``."""
    path = data_dir / "secrets.env"
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise Failure(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        return _parse_env_file(path.read_text()), False
    result = subprocess.run(
        [sys.executable, "-m", "key_service", "generate-secrets"],
        cwd=ROOT, env=_python_env(env), capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise Failure(f"could not generate secrets: {result.stderr.strip()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(result.stdout)
    return _parse_env_file(result.stdout), True


def write_routes(data_dir: Path, settings: Settings) -> Path:
    """The gateway's route table for this run: every path to the demo backend, key required."""
    path = data_dir / "routes.toml"
    path.write_text(
        "# Written by scripts/run_local.py on every start.\n"
        "[[route]]\n"
        'prefix = "/"\n'
        f'upstream = "http://{_http_host(settings.demo_host)}:{settings.demo_port}"\n'
        'auth = "required"\n'
    )
    return path


def _http_host(host: str) -> str:
    connect = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    return f"[{connect}]" if ":" in connect else connect


# -- processes --------------------------------------------------------------------------------
class Service:
    """One child process, in a process group (and session) of its own, logging to a file."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_path: Path,
                 ready_url: str) -> None:
        self.name = name
        self.log_path = log_path
        self.ready_url = ready_url
        self._log: IO[bytes] = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=dict(env), stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def tail(self, lines: int = 20) -> str:
        """The end of the service's log, indented."""
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in text)

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the whole group; False when nothing of it is left."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def group_alive(self) -> bool:
        """True while any process of the group exists (the leader is reaped as it exits)."""
        self.proc.poll()
        return self.signal_group(0)

    def close(self) -> None:
        """Close the log file."""
        self._log.close()


def wait_ready(service: Service, timeout: float = READY_TIMEOUT) -> None:
    """Poll the service's ready URL until 200; Failure if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        check_stop()
        if service.proc.poll() is not None:
            raise Failure(
                f"{service.name} exited with status {service.proc.returncode} while starting; "
                f"the end of {service.log_path}:\n{service.tail()}"
            )
        try:
            # Our own http:// URL, built above from host and port.
            with urllib.request.urlopen(service.ready_url, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise Failure(
        f"{service.name} was not ready at {service.ready_url} within {timeout:.0f}s ({last}); "
        f"the end of {service.log_path}:\n{service.tail()}"
    )


def stop_all(services: list[Service]) -> None:
    """SIGTERM every group (newest first), wait, SIGKILL what is left; leaves nothing behind."""
    for service in reversed(services):
        service.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and any(s.group_alive() for s in services):
        time.sleep(0.1)
    for service in services:
        if service.group_alive():
            print(f"run_local: {service.name} did not stop in {STOP_TIMEOUT:.0f}s; killing it",
                  file=sys.stderr)
            service.signal_group(signal.SIGKILL)
    for service in services:
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.proc.wait(timeout=5)
        while service.group_alive():
            time.sleep(0.05)
        service.close()


_signals: list[int] = []


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    # Only recorded: the loops below look at it, so no step is ever cut off half way (a child
    # started but not yet tracked, a stop interrupted).
    _signals.append(signum)


def check_stop() -> None:
    """Raise Stop once SIGINT or SIGTERM has arrived."""
    if _signals:
        raise Stop


def create_admin(settings: Settings, env: Mapping[str, str], log: Path) -> str | None:
    """Create the administrator; the password to show once, or None when it is not ours to show."""
    password = settings.admin_password
    generated = password is None
    if password is None:
        alphabet = string.ascii_letters + string.digits
        password = "".join(secrets.choice(alphabet) for _ in range(20))
    result = subprocess.run(
        [sys.executable, "-m", "key_service", "create-admin", "--username",
         settings.admin_username, "--password-stdin"],
        cwd=ROOT, env=dict(env), input=password + "\n", capture_output=True, text=True,
        check=False,
    )
    with log.open("a") as handle:
        handle.write(result.stdout + result.stderr)
    if result.returncode == 0:
        return password if generated else None
    if "already exists" in result.stderr:
        return None
    raise Failure(f"could not create the administrator: {result.stderr.strip()}")


def banner(settings: Settings, password: str | None, existed: bool, secrets_env: Path) -> str:
    """What to tell the person who ran ``make run``."""
    gateway = f"http://{_http_host(settings.gateway_host)}:{settings.gateway_port}"
    key_service = f"http://{_http_host(settings.key_service_host)}:{settings.key_service_port}"
    demo = f"http://{_http_host(settings.demo_host)}:{settings.demo_port}"
    if password is not None:
        login = (f"Log in at {key_service}/ as {settings.admin_username!r} with password "
                 f"{password}\n  (generated now and shown only this once; set ADMIN_PASSWORD to "
                 "choose your own)")
    elif existed:
        login = (f"Log in at {key_service}/ as {settings.admin_username!r} with the password "
                 "given when it was created\n  (forgotten? stop, delete the data directory and "
                 "run again)")
    else:
        login = f"Log in at {key_service}/ as {settings.admin_username!r} with ADMIN_PASSWORD"
    return f"""
apikeys is running. Ctrl-C stops everything.

  gateway       {gateway}   ({settings.gateway_workers} workers; all paths go to the demo backend)
  key_service   {key_service}   (Backoffice page and JSON API)
  demo backend  {demo}   (echoes each request)

{login}
Issue a key under Settings > Manage API Keys, then:
  curl -i {gateway}/hello \\
       -H "X-AuthenticationKeyId: <key ID>" -H "X-AuthenticationKeyValue: <key secret>"
Without the two headers, or with a wrong or revoked key, the answer is 401.

Data (SQLite, secrets in {secrets_env.name}, logs): {settings.data_dir}
Key events: set -a; . {secrets_env}; set +a; KEY_SERVICE_URL={key_service} \\
  .venv/bin/python examples/subscriber.py   (docs/events.md)
"""


def run(env: dict[str, str]) -> int:
    """Check, prepare, start, wait for a signal, stop; the exit status."""
    settings = load_settings(env)
    check_redis(settings.redis_url)
    check_rabbitmq(settings.rabbitmq_url)
    for host, port, variable in (
        (settings.demo_host, settings.demo_port, "DEMO_BACKEND_PORT"),
        (settings.key_service_host, settings.key_service_port, "KEY_SERVICE_PORT"),
        (settings.gateway_host, settings.gateway_port, "GATEWAY_PORT"),
    ):
        check_port_free(host, port, variable)

    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    logs = settings.data_dir / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    deployment, made = load_or_make_secrets(settings.data_dir, env)
    if made:
        print(f"run_local: generated deployment secrets in {settings.data_dir / 'secrets.env'}")
    routes = write_routes(settings.data_dir, settings)
    key_service_url = f"http://{_http_host(settings.key_service_host)}:{settings.key_service_port}"
    # The environment wins over the secrets file, so a deployment can bring its own.
    child_env = _python_env({
        **deployment,
        **env,
        "KEY_SERVICE_DATA_DIR": str(settings.data_dir),
        "KEY_SERVICE_HOST": settings.key_service_host,
        "KEY_SERVICE_PORT": str(settings.key_service_port),
        "GATEWAY_HOST": settings.gateway_host,
        "GATEWAY_PORT": str(settings.gateway_port),
        "GATEWAY_WORKERS": str(settings.gateway_workers),
        "GATEWAY_ROUTES": str(routes),
        SHUTDOWN_TIMEOUT.name: str(settings.gateway_shutdown_timeout),
        "KEY_SERVICE_URL": env.get("KEY_SERVICE_URL") or key_service_url,
        "REDIS_URL": settings.redis_url,
        "RABBITMQ_URL": settings.rabbitmq_url,
    })
    for name in (ADMIN_USERNAME.name, ADMIN_PASSWORD.name):
        child_env.pop(name, None)

    migrated = subprocess.run(
        [sys.executable, "-m", "key_service", "migrate"], cwd=ROOT, env=child_env,
        capture_output=True, text=True, check=False,
    )
    if migrated.returncode != 0:
        raise Failure(f"migrating the database failed: {migrated.stderr.strip()}")
    check_stop()
    password = create_admin(settings, child_env, logs / "key_service.log")
    existed = password is None and settings.admin_password is None

    services: list[Service] = []
    try:
        specs = [
            ("demo backend", ["-m", "demo_backend", "--host", settings.demo_host,
                              "--port", str(settings.demo_port)],
             f"http://{_http_host(settings.demo_host)}:{settings.demo_port}/_demo/stats"),
            ("key_service", ["-m", "key_service", "serve", "--host", settings.key_service_host,
                             "--port", str(settings.key_service_port)],
             f"{key_service_url}/readyz"),
            ("gateway", ["-m", "auth_gateway", "serve", "--host", settings.gateway_host,
                         "--port", str(settings.gateway_port),
                         "--workers", str(settings.gateway_workers)],
             f"http://{_http_host(settings.gateway_host)}:{settings.gateway_port}/readyz"),
        ]
        for name, args, ready_url in specs:
            check_stop()
            log_path = logs / f"{name.replace(' ', '_')}.log"
            service = Service(name, args, child_env, log_path, ready_url)
            services.append(service)
            wait_ready(service)
            print(f"run_local: {name} is ready (log: {log_path})", flush=True)
        print(banner(settings, password, existed, settings.data_dir / "secrets.env"), flush=True)
        while True:
            check_stop()
            for service in services:
                if service.proc.poll() is not None:
                    raise Failure(
                        f"{service.name} stopped on its own (status {service.proc.returncode}); "
                        f"the end of {service.log_path}:\n{service.tail()}"
                    )
            time.sleep(0.5)
    finally:
        if services:
            print("run_local: stopping ...", flush=True)
            stop_all(services)
            print("run_local: everything stopped", flush=True)


def main() -> int:
    """Entry point: 0 after a requested stop, 1 when something failed."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    try:
        return run(dict(os.environ))
    except Stop:
        return 0
    except Failure as exc:
        print(f"run_local: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
