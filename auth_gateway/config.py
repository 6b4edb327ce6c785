"""Every setting auth_gateway reads, mapped from the environment in one place.

A missing or malformed variable raises ``apikeys_shared.ConfigError`` naming it, and the gateway
refuses to start.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from apikeys_shared.amqp import check_rabbitmq_url
from apikeys_shared.config import (
    DEFAULT_RABBITMQ_URL,
    DEFAULT_REDIS_URL,
    Env,
    Secrets,
    load_secrets,
)
from apikeys_shared.errors import ConfigError
from apikeys_shared.events import EXCHANGE
from apikeys_shared.redis_url import parse_redis_url

__all__ = ["UNIX_PEER", "GatewayConfig", "Limits", "load_config", "unix_socket_path"]

DEFAULT_KEY_SERVICE_URL = "http://127.0.0.1:8081"
# How a peer on the Unix socket is named (its remote address in logs, its address for the
# failure count) and how GATEWAY_TRUSTED_PROXIES trusts such peers: nginx's own spelling
# ($remote_addr, set_real_ip_from).
UNIX_PEER = "unix:"
# sockaddr_un's sun_path holds 108 bytes, the terminating NUL included.
_UNIX_PATH_MAX = 107


@dataclass(frozen=True)
class Limits:
    """Bounds on what one client may send, and on how long an upstream may take."""

    max_header_bytes: int = 16384
    max_headers: int = 100
    max_body_bytes: int = 1024**3
    upstream_connect_timeout: float = 5.0
    upstream_total_timeout: float = 60.0
    upstream_max_connections: int = 512
    upstream_idle_timeout: float = 1.5
    min_upload_rate: int = 1024  # bytes/s on average, after the first timeout's worth


@dataclass(frozen=True)
class GatewayConfig:
    """auth_gateway's configuration; build it with ``load_config()``."""

    secrets: Secrets = field(repr=False)
    routes_path: Path
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    unix_socket: str | None = None
    unix_socket_mode: int = 0o660
    key_service_url: str = DEFAULT_KEY_SERVICE_URL
    key_service_timeout: float = 2.0
    redis_url: str = DEFAULT_REDIS_URL
    redis_timeout: float = 0.5
    redis_prefix: str = "apikeys:"
    rabbitmq_url: str = DEFAULT_RABBITMQ_URL
    exchange: str = EXCHANGE
    dead_letter_exchange: str | None = None
    queue_prefix: str = "apikeys.gateway"
    feed_poll_interval: float = 2.0
    # While subscribed, the feed is read this often anyway (see sync.SAFETY_POLL_INTERVAL).
    feed_safety_interval: float = 10.0
    l1_size: int = 10000
    l1_ttl: float = 30.0
    negative_ttl: float = 5.0
    negative_size: int = 10000
    failed_auth_threshold: int = 20
    failed_auth_window: int = 60
    failed_auth_sync: float = 0.25
    unavailable_retry_after: int = 2
    trusted_proxies: tuple[str, ...] = ()
    metrics_allow: tuple[str, ...] | None = None  # None: /metrics for every peer
    limits: Limits = field(default_factory=Limits)
    shutdown_timeout: float = 30.0
    log_level: str = "INFO"


def _proxies(env: Env, name: str = "GATEWAY_TRUSTED_PROXIES") -> tuple[str, ...]:
    raw = env.optional(name)
    if raw is None:
        return ()
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
    raw = env.text("GATEWAY_UNIX_SOCKET_MODE", "660")
    try:
        mode = int(raw, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ConfigError(
            f"GATEWAY_UNIX_SOCKET_MODE must be octal permission bits such as 660, got {raw!r}"
        )
    return mode


def _redis_url(env: Env) -> str:
    """REDIS_URL in any form ``apikeys_shared.redis_url`` knows (single, Sentinel, Cluster)."""
    url = env.text("REDIS_URL", DEFAULT_REDIS_URL)
    parse_redis_url(url, "REDIS_URL")
    return url


def load_config(environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read every ``GATEWAY_*`` and shared variable; ConfigError names a bad one."""
    env = Env(os.environ if environ is None else environ)
    prefix = env.text("GATEWAY_REDIS_PREFIX", "apikeys:")
    level = env.log_level("GATEWAY_LOG_LEVEL")
    unix_socket = env.optional("GATEWAY_UNIX_SOCKET")
    limits = Limits(
        max_header_bytes=env.integer(
            "GATEWAY_MAX_HEADER_BYTES", 16384, minimum=1024, maximum=1024 * 1024
        ),
        max_headers=env.integer("GATEWAY_MAX_HEADERS", 100, minimum=8, maximum=1000),
        max_body_bytes=env.integer("GATEWAY_MAX_BODY_BYTES", 1024**3, minimum=0),
        upstream_connect_timeout=env.number(
            "GATEWAY_UPSTREAM_CONNECT_TIMEOUT", 5.0, minimum=0.01, maximum=600
        ),
        upstream_total_timeout=env.number(
            "GATEWAY_UPSTREAM_TIMEOUT", 60.0, minimum=0.01, maximum=86400
        ),
        upstream_max_connections=env.integer(
            "GATEWAY_UPSTREAM_MAX_CONNECTIONS", 512, minimum=1, maximum=100_000
        ),
        upstream_idle_timeout=env.number(
            "GATEWAY_UPSTREAM_IDLE_TIMEOUT", 1.5, minimum=0.1, maximum=3600
        ),
        min_upload_rate=env.integer(
            "GATEWAY_MIN_UPLOAD_RATE", 1024, minimum=0, maximum=1024**3
        ),
    )
    return GatewayConfig(
        secrets=load_secrets(env, signer=False, verifier=True),
        routes_path=Path(env.text("GATEWAY_ROUTES")),
        host=env.text("GATEWAY_HOST", "127.0.0.1"),
        port=env.integer("GATEWAY_PORT", 8080, minimum=0, maximum=65535),
        workers=env.integer("GATEWAY_WORKERS", 1, minimum=1, maximum=256),
        unix_socket=None if unix_socket is None else unix_socket_path(unix_socket),
        unix_socket_mode=_mode(env),
        key_service_url=env.url(
            "KEY_SERVICE_URL", DEFAULT_KEY_SERVICE_URL, ("http", "https")
        ).rstrip("/"),
        key_service_timeout=env.number(
            "GATEWAY_KEY_SERVICE_TIMEOUT", 2.0, minimum=0.01, maximum=60
        ),
        redis_url=_redis_url(env),
        redis_timeout=env.number("GATEWAY_REDIS_TIMEOUT", 0.5, minimum=0.01, maximum=60),
        redis_prefix=prefix,
        # One broker, or every node of a cluster: see apikeys_shared.amqp.
        rabbitmq_url=check_rabbitmq_url(env.text("RABBITMQ_URL", DEFAULT_RABBITMQ_URL)),
        exchange=env.text("APIKEYS_EXCHANGE", EXCHANGE),
        dead_letter_exchange=env.optional("GATEWAY_DEAD_LETTER_EXCHANGE"),
        queue_prefix=env.text("GATEWAY_QUEUE_PREFIX", "apikeys.gateway"),
        feed_poll_interval=env.number(
            "GATEWAY_FEED_POLL_INTERVAL", 2.0, minimum=0.05, maximum=3600
        ),
        feed_safety_interval=env.number(
            "GATEWAY_FEED_SAFETY_INTERVAL", 10.0, minimum=0.05, maximum=3600
        ),
        l1_size=env.integer("GATEWAY_L1_SIZE", 10000, minimum=0, maximum=10_000_000),
        l1_ttl=env.number("GATEWAY_L1_TTL", 30.0, minimum=0, maximum=86400),
        negative_ttl=env.number("GATEWAY_NEGATIVE_TTL", 5.0, minimum=0, maximum=3600),
        negative_size=env.integer(
            "GATEWAY_NEGATIVE_SIZE", 10000, minimum=0, maximum=10_000_000
        ),
        failed_auth_threshold=env.integer(
            "GATEWAY_FAILED_AUTH_THRESHOLD", 20, minimum=1, maximum=1_000_000
        ),
        failed_auth_window=env.integer(
            "GATEWAY_FAILED_AUTH_WINDOW", 60, minimum=1, maximum=86400
        ),
        failed_auth_sync=env.number(
            "GATEWAY_FAILED_AUTH_SYNC", 0.25, minimum=0.01, maximum=3600
        ),
        unavailable_retry_after=env.integer(
            "GATEWAY_RETRY_AFTER", 2, minimum=1, maximum=3600
        ),
        trusted_proxies=_proxies(env),
        metrics_allow=(
            None if env.optional("GATEWAY_METRICS_ALLOW") is None
            else _proxies(env, "GATEWAY_METRICS_ALLOW")
        ),
        limits=limits,
        shutdown_timeout=env.number("GATEWAY_SHUTDOWN_TIMEOUT", 30.0, minimum=0, maximum=3600),
        log_level=level,
    )
