"""Every variable auth_gateway reads, declared once (``SETTINGS``) and read in one function.

Each ``Setting`` holds its variable's default, bounds and meaning; the config dataclasses take
their defaults from them and docs/configuration.md is generated from ``SETTINGS``
(``scripts/configuration_docs.py``). A missing or malformed variable raises
``apikeys_shared.ConfigError`` naming it, and the gateway refuses to start.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from apikeys_shared import config as shared
from apikeys_shared.config import Env, Secrets, load_secrets
from apikeys_shared.errors import ConfigError
from apikeys_shared.rabbitmq_url import check_rabbitmq_url
from apikeys_shared.redis_url import parse_redis_url
from apikeys_shared.settings import REQUIRED, Catalogue, Setting

__all__ = [
    "SETTINGS", "UNIX_PEER", "GatewayConfig", "Limits", "load_config", "unix_socket_path",
]

# How a peer on the Unix socket is named (its remote address in logs, its address for the
# failure count) and how GATEWAY_TRUSTED_PROXIES trusts such peers: nginx's own spelling
# ($remote_addr, set_real_ip_from).
UNIX_PEER = "unix:"
# sockaddr_un's sun_path holds 108 bytes, the terminating NUL included.
_UNIX_PATH_MAX = 107

HOST: Setting[str] = Setting("GATEWAY_HOST", "127.0.0.1", "listen address (`--host`)")
PORT: Setting[int] = Setting("GATEWAY_PORT", 8080, "listen port (`--port`)", 0, 65535)
WORKERS: Setting[int] = Setting(
    "GATEWAY_WORKERS", 1,
    "processes sharing the port (SO_REUSEPORT; `--workers`). On a host shared with nginx "
    "asking for verdicts, fewer than the cores (docs/deploy.md)", 1, 256,
)
ROUTES: Setting[str] = Setting(
    "GATEWAY_ROUTES", REQUIRED, "path of the TOML route table (docs/gateway.md)")
UNIX_SOCKET: Setting[str | None] = Setting(
    "GATEWAY_UNIX_SOCKET", None,
    "also listen on a Unix socket at this path (`--unix PATH`), for a proxy on the same host "
    "asking `/_auth/verify`; its peers are named `unix:`. The gateway holds the path by a lock "
    "on `PATH.lock` while it runs, shares the socket among its workers and removes the file "
    "when its drain begins",
)
UNIX_SOCKET_MODE: Setting[str] = Setting(
    "GATEWAY_UNIX_SOCKET_MODE", "660",
    "that socket's permission bits (octal): who may connect. With `unix:` trusted, whoever may "
    "connect chooses the address its failed attempts count against: prefer `660` and a group "
    "shared with nginx's worker user over `666`",
)
KEY_SERVICE_URL: Setting[str] = Setting(
    "KEY_SERVICE_URL", "http://127.0.0.1:8081", "key_service, for lookups and the event feed")
KEY_SERVICE_TIMEOUT: Setting[float] = Setting(
    "GATEWAY_KEY_SERVICE_TIMEOUT", 2.0, "seconds per key_service call", 0.01, 60)
REDIS_TIMEOUT: Setting[float] = Setting(
    "GATEWAY_REDIS_TIMEOUT", 0.5, "seconds per Redis command", 0.01, 60)
REDIS_PREFIX: Setting[str] = Setting(
    "GATEWAY_REDIS_PREFIX", "apikeys:",
    "Redis key prefix (`key:{id}`, `fail:{address}`, `blocked`, `blocked:version`)")
QUEUE_PREFIX: Setting[str] = Setting(
    "GATEWAY_QUEUE_PREFIX", "apikeys.gateway", "each process's own event queue name prefix")
DEAD_LETTER_EXCHANGE: Setting[str | None] = Setting(
    "GATEWAY_DEAD_LETTER_EXCHANGE", None,
    "where rejected (forged, malformed) events go; unset drops them")
FEED_POLL_INTERVAL: Setting[float] = Setting(
    "GATEWAY_FEED_POLL_INTERVAL", 2.0,
    "seconds between feed reads while RabbitMQ is away: then the bound on how long a revoked "
    "key can still pass", 0.05, 3600,
)
FEED_SAFETY_INTERVAL: Setting[float] = Setting(
    "GATEWAY_FEED_SAFETY_INTERVAL", 10.0,
    "seconds between feed reads while subscribed: the bound for an event the broker lost "
    "without a trace; an event such a read brings that the broker has not delivered 5 s later "
    "makes the process subscribe afresh", 0.05, 3600,
)
HEARTBEAT_INTERVAL: Setting[float] = Setting(
    "GATEWAY_HEARTBEAT_INTERVAL", 2.0,
    "seconds between a process's heartbeats to key_service (one is also sent as soon as it "
    "applies an event): how a revocation's receipt knows the process is alive and what it "
    "has applied", 0.1, 60,
)
NAME: Setting[str | None] = Setting(
    "GATEWAY_NAME", None,
    "the name each process reports in its heartbeats, followed by `:pid`",
    shown="the host name",
)
L1_SIZE: Setting[int] = Setting(
    "GATEWAY_L1_SIZE", 200_000,
    "key records each process caches (LRU; about 1.6 KiB of memory each)", 0, 10_000_000)
L1_TTL: Setting[float] = Setting(
    "GATEWAY_L1_TTL", 30.0, "seconds a cached record is used past the later of when it was cached "
    "and the last moment the process knew it had every key event (a safety net: events update "
    "the cache at once)", 0, 86400)
L1_KEEP_WHILE_CURRENT: Setting[bool] = Setting(
    "GATEWAY_L1_KEEP_WHILE_CURRENT", True,
    "keep a cached record for as long as it is used while the process knows it has applied "
    "every key event (off: every record is read from Redis again `GATEWAY_L1_TTL` seconds after "
    "it was cached)",
)
NEGATIVE_SIZE: Setting[int] = Setting(
    "GATEWAY_NEGATIVE_SIZE", 10000, "unknown key IDs each process remembers", 0, 10_000_000)
NEGATIVE_TTL: Setting[float] = Setting(
    "GATEWAY_NEGATIVE_TTL", 5.0,
    "seconds an unknown key ID is remembered (a `key.issued` event clears it)", 0, 3600)
UNKNOWN_KEY_LOOKUPS: Setting[float] = Setting(
    "GATEWAY_UNKNOWN_KEY_LOOKUPS", 5.0,
    "lookups per second, per process, of key IDs the process does not know to exist (a key "
    "issued a moment ago whose event has not arrived); past it such an ID gets 401 without "
    "asking key_service", 0, 100_000)
FAILED_AUTH_THRESHOLD: Setting[int] = Setting(
    "GATEWAY_FAILED_AUTH_THRESHOLD", 20,
    "failed authentications per client address (an IPv6 address counts as its /64) in one "
    "window before 429", 1, 1_000_000,
)
FAILED_AUTH_WINDOW: Setting[int] = Setting(
    "GATEWAY_FAILED_AUTH_WINDOW", 60, "that window, seconds", 1, 86400)
FAILED_AUTH_SYNC: Setting[float] = Setting(
    "GATEWAY_FAILED_AUTH_SYNC", 0.25,
    "seconds between each process's reads of the addresses other processes blocked (one Redis "
    "round trip each)", 0.01, 3600,
)
RETRY_AFTER: Setting[int] = Setting(
    "GATEWAY_RETRY_AFTER", 2, "`Retry-After` seconds on a 503", 1, 3600)
USAGE_RECORDING: Setting[bool] = Setting(
    "GATEWAY_USAGE_RECORDING", True,
    "note per key the time of its last authenticated request and a count, and report them to "
    "key_service (each key's `last_used_at` and daily counts; docs/operations.md)",
)
USAGE_REPORT_INTERVAL: Setting[float] = Setting(
    "GATEWAY_USAGE_REPORT_INTERVAL", 30.0,
    "seconds between each process's usage reports to key_service (and one more at SIGTERM): "
    "how far `last_used_at` may lag behind a request", 0.05, 30,
)
USAGE_BUFFER_KEYS: Setting[int] = Setting(
    "GATEWAY_USAGE_BUFFER_KEYS", 100_000,
    "usage entries (one per key and UTC day) each process holds while key_service cannot take "
    "its reports; past it the oldest go, counted in `gateway_usage_dropped_requests`",
    1, 10_000_000,
)
TRUSTED_PROXIES: Setting[str | None] = Setting(
    "GATEWAY_TRUSTED_PROXIES", None,
    "IPs or CIDR networks, comma separated, whose `X-Forwarded-For` / `-Proto` are believed; "
    "`unix:` for peers on the Unix socket",
)
METRICS_ALLOW: Setting[str | None] = Setting(
    "GATEWAY_METRICS_ALLOW", None,
    "IPs or CIDR networks (and `unix:`) of the peers `/metrics` is served to; others get 403 "
    "(the connecting address decides, never `X-Forwarded-For`). Unset: every peer",
)
MAX_HEADER_BYTES: Setting[int] = Setting(
    "GATEWAY_MAX_HEADER_BYTES", 16384, "request head size beyond which the answer is 431",
    1024, 1024 * 1024)
MAX_HEADERS: Setting[int] = Setting(
    "GATEWAY_MAX_HEADERS", 100, "request header lines beyond which the answer is 431", 8, 1000)
MAX_BODY_BYTES: Setting[int] = Setting(
    "GATEWAY_MAX_BODY_BYTES", 1024**3,
    "request body size beyond which the answer is 413 (bodies are streamed, never held)", 0)
UPSTREAM_CONNECT_TIMEOUT: Setting[float] = Setting(
    "GATEWAY_UPSTREAM_CONNECT_TIMEOUT", 5.0, "seconds to connect to an upstream; then 502",
    0.01, 600)
UPSTREAM_TIMEOUT: Setting[float] = Setting(
    "GATEWAY_UPSTREAM_TIMEOUT", 60.0,
    "seconds any one wait of a forwarded request may take: a pause in the request body (408 "
    "for a stalled client, 504 for an upstream that stops reading), the response head once "
    "the body is complete (504), a response of at most 64 KiB, read whole before it is sent "
    "(504), a pause while a longer one streams (the connection is cut)", 0.01, 86400,
)
MIN_UPLOAD_RATE: Setting[int] = Setting(
    "GATEWAY_MIN_UPLOAD_RATE", 1024,
    "bytes per second a request body must average, once a timeout's worth of time has passed, "
    "to keep pushing that timeout back (0: no minimum); below it, 408", 0, 1024**3,
)
UPSTREAM_MAX_CONNECTIONS: Setting[int] = Setting(
    "GATEWAY_UPSTREAM_MAX_CONNECTIONS", 512,
    "connections in use at once to each upstream (pooled, kept alive); a request that finds "
    "none free within the connect timeout gets 503 with `Retry-After`", 1, 100_000,
)
UPSTREAM_IDLE_TIMEOUT: Setting[float] = Setting(
    "GATEWAY_UPSTREAM_IDLE_TIMEOUT", 1.5,
    "seconds a pooled upstream connection may stay idle and still be used; keep it below the "
    "upstreams' own keep-alive timeout (gunicorn 2 s, uvicorn and Node.js 5 s, nginx 75 s)",
    0.1, 3600,
)
SHUTDOWN_TIMEOUT: Setting[float] = Setting(
    "GATEWAY_SHUTDOWN_TIMEOUT", 30.0, "seconds to drain requests in flight on SIGTERM", 0, 3600)
LOG_LEVEL: Setting[str] = Setting(
    "GATEWAY_LOG_LEVEL", "INFO",
    "`DEBUG`, `INFO`, `WARNING` or `ERROR`; JSON access logs on stderr (key ID and request ID, "
    "never the secret)",
)

SETTINGS = Catalogue.of("auth_gateway", (
    "`python -m auth_gateway serve [--host H] [--port P] [--workers N] [--unix PATH]`."
), (
    shared.PEPPERS, shared.VERIFY_KEYS, shared.INTERNAL_TOKEN, ROUTES, HOST, PORT, WORKERS,
    UNIX_SOCKET, UNIX_SOCKET_MODE, KEY_SERVICE_URL, KEY_SERVICE_TIMEOUT, shared.REDIS_URL,
    REDIS_TIMEOUT, REDIS_PREFIX, shared.RABBITMQ_URL, shared.EXCHANGE, QUEUE_PREFIX,
    DEAD_LETTER_EXCHANGE, FEED_POLL_INTERVAL, FEED_SAFETY_INTERVAL, HEARTBEAT_INTERVAL, NAME,
    L1_SIZE, L1_TTL, L1_KEEP_WHILE_CURRENT, NEGATIVE_SIZE, NEGATIVE_TTL, UNKNOWN_KEY_LOOKUPS,
    FAILED_AUTH_THRESHOLD, FAILED_AUTH_WINDOW, FAILED_AUTH_SYNC, RETRY_AFTER, USAGE_RECORDING,
    USAGE_REPORT_INTERVAL, USAGE_BUFFER_KEYS, TRUSTED_PROXIES, METRICS_ALLOW, MAX_HEADER_BYTES,
    MAX_HEADERS, MAX_BODY_BYTES,
    UPSTREAM_CONNECT_TIMEOUT, UPSTREAM_TIMEOUT, MIN_UPLOAD_RATE, UPSTREAM_MAX_CONNECTIONS,
    UPSTREAM_IDLE_TIMEOUT, SHUTDOWN_TIMEOUT, LOG_LEVEL,
))


@dataclass(frozen=True)
class Limits:
    """Bounds on what one client may send, and on how long an upstream may take."""

    max_header_bytes: int = MAX_HEADER_BYTES.default
    max_headers: int = MAX_HEADERS.default
    max_body_bytes: int = MAX_BODY_BYTES.default
    upstream_connect_timeout: float = UPSTREAM_CONNECT_TIMEOUT.default
    upstream_total_timeout: float = UPSTREAM_TIMEOUT.default
    upstream_max_connections: int = UPSTREAM_MAX_CONNECTIONS.default
    upstream_idle_timeout: float = UPSTREAM_IDLE_TIMEOUT.default
    # bytes/s on average, after the first timeout's worth
    min_upload_rate: int = MIN_UPLOAD_RATE.default


@dataclass(frozen=True)
class GatewayConfig:
    """auth_gateway's configuration; build it with ``load_config()``."""

    secrets: Secrets = field(repr=False)
    routes_path: Path
    host: str = HOST.default
    port: int = PORT.default
    workers: int = WORKERS.default
    unix_socket: str | None = None
    unix_socket_mode: int = int(UNIX_SOCKET_MODE.default, 8)
    key_service_url: str = KEY_SERVICE_URL.default
    key_service_timeout: float = KEY_SERVICE_TIMEOUT.default
    redis_url: str = shared.REDIS_URL.default
    redis_timeout: float = REDIS_TIMEOUT.default
    redis_prefix: str = REDIS_PREFIX.default
    rabbitmq_url: str = shared.RABBITMQ_URL.default
    exchange: str = shared.EXCHANGE.default
    dead_letter_exchange: str | None = None
    queue_prefix: str = QUEUE_PREFIX.default
    feed_poll_interval: float = FEED_POLL_INTERVAL.default
    # While subscribed, the feed is read this often anyway.
    feed_safety_interval: float = FEED_SAFETY_INTERVAL.default
    heartbeat_interval: float = HEARTBEAT_INTERVAL.default
    name: str | None = None  # None: the host name
    l1_size: int = L1_SIZE.default
    l1_ttl: float = L1_TTL.default
    l1_keep_while_current: bool = L1_KEEP_WHILE_CURRENT.default
    negative_ttl: float = NEGATIVE_TTL.default
    negative_size: int = NEGATIVE_SIZE.default
    unknown_key_lookups: float = UNKNOWN_KEY_LOOKUPS.default
    failed_auth_threshold: int = FAILED_AUTH_THRESHOLD.default
    failed_auth_window: int = FAILED_AUTH_WINDOW.default
    failed_auth_sync: float = FAILED_AUTH_SYNC.default
    unavailable_retry_after: int = RETRY_AFTER.default
    usage_recording: bool = USAGE_RECORDING.default
    usage_report_interval: float = USAGE_REPORT_INTERVAL.default
    usage_buffer_keys: int = USAGE_BUFFER_KEYS.default
    trusted_proxies: tuple[str, ...] = ()
    metrics_allow: tuple[str, ...] | None = None  # None: /metrics for every peer
    limits: Limits = field(default_factory=Limits)
    shutdown_timeout: float = SHUTDOWN_TIMEOUT.default
    log_level: str = LOG_LEVEL.default


def _proxies(env: Env, setting: Setting[str | None]) -> tuple[str, ...] | None:
    """Addresses, networks and ``unix:``, comma separated (None when unset)."""
    raw = setting.optional(env)
    name = setting.name
    if raw is None:
        return None
    out: list[str] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        if item == UNIX_PEER:
            out.append(item)
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ConfigError(
                f"{name}: {item!r} is not an IP address or network "
                f"(or {UNIX_PEER!r} for peers on the Unix socket)"
            ) from exc
        out.append(item)
    return tuple(out)


def unix_socket_path(path: str, name: str = "GATEWAY_UNIX_SOCKET") -> str:
    """``path`` if a Unix socket can be made there, else ConfigError naming ``name``."""
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        raise ConfigError(
            f"{name}: {path!r} is longer than a Unix socket path may be ({_UNIX_PATH_MAX} bytes)"
        )
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise ConfigError(f"{name}: the directory of {path!r} does not exist")
    return path


def _mode(env: Env) -> int:
    raw = UNIX_SOCKET_MODE.text(env)
    try:
        mode = int(raw, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ConfigError(
            f"{UNIX_SOCKET_MODE.name} must be octal permission bits such as 660, got {raw!r}"
        )
    return mode


def _redis_url(env: Env) -> str:
    """REDIS_URL in any form ``apikeys_shared.redis_url`` knows (single, Sentinel, Cluster)."""
    url = shared.REDIS_URL.text(env)
    parse_redis_url(url, shared.REDIS_URL.name)
    return url


def load_config(environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read every variable of ``SETTINGS``; ConfigError names a bad one."""
    env = Env(os.environ if environ is None else environ)
    unix_socket = UNIX_SOCKET.optional(env)
    limits = Limits(
        max_header_bytes=MAX_HEADER_BYTES.integer(env),
        max_headers=MAX_HEADERS.integer(env),
        max_body_bytes=MAX_BODY_BYTES.integer(env),
        upstream_connect_timeout=UPSTREAM_CONNECT_TIMEOUT.number(env),
        upstream_total_timeout=UPSTREAM_TIMEOUT.number(env),
        upstream_max_connections=UPSTREAM_MAX_CONNECTIONS.integer(env),
        upstream_idle_timeout=UPSTREAM_IDLE_TIMEOUT.number(env),
        min_upload_rate=MIN_UPLOAD_RATE.integer(env),
    )
    return GatewayConfig(
        secrets=load_secrets(env, signer=False, verifier=True),
        routes_path=Path(ROUTES.text(env)),
        host=HOST.text(env),
        port=PORT.integer(env),
        workers=WORKERS.integer(env),
        unix_socket=None if unix_socket is None else unix_socket_path(unix_socket),
        unix_socket_mode=_mode(env),
        key_service_url=KEY_SERVICE_URL.url(env, ("http", "https")).rstrip("/"),
        key_service_timeout=KEY_SERVICE_TIMEOUT.number(env),
        redis_url=_redis_url(env),
        redis_timeout=REDIS_TIMEOUT.number(env),
        redis_prefix=REDIS_PREFIX.text(env),
        rabbitmq_url=check_rabbitmq_url(shared.RABBITMQ_URL.text(env)),
        exchange=shared.EXCHANGE.text(env),
        dead_letter_exchange=DEAD_LETTER_EXCHANGE.optional(env),
        queue_prefix=QUEUE_PREFIX.text(env),
        feed_poll_interval=FEED_POLL_INTERVAL.number(env),
        feed_safety_interval=FEED_SAFETY_INTERVAL.number(env),
        heartbeat_interval=HEARTBEAT_INTERVAL.number(env),
        name=NAME.optional(env),
        l1_size=L1_SIZE.integer(env),
        l1_ttl=L1_TTL.number(env),
        l1_keep_while_current=L1_KEEP_WHILE_CURRENT.flag(env),
        negative_ttl=NEGATIVE_TTL.number(env),
        negative_size=NEGATIVE_SIZE.integer(env),
        unknown_key_lookups=UNKNOWN_KEY_LOOKUPS.number(env),
        failed_auth_threshold=FAILED_AUTH_THRESHOLD.integer(env),
        failed_auth_window=FAILED_AUTH_WINDOW.integer(env),
        failed_auth_sync=FAILED_AUTH_SYNC.number(env),
        unavailable_retry_after=RETRY_AFTER.integer(env),
        usage_recording=USAGE_RECORDING.flag(env),
        usage_report_interval=USAGE_REPORT_INTERVAL.number(env),
        usage_buffer_keys=USAGE_BUFFER_KEYS.integer(env),
        trusted_proxies=_proxies(env, TRUSTED_PROXIES) or (),
        metrics_allow=_proxies(env, METRICS_ALLOW),
        limits=limits,
        shutdown_timeout=SHUTDOWN_TIMEOUT.number(env),
        log_level=LOG_LEVEL.log_level(env),
    )
