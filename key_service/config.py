"""Every setting key_service reads, mapped from the environment in one place."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from apikeys_shared.config import DEFAULT_RABBITMQ_URL, Env, Secrets, load_secrets
from apikeys_shared.errors import ConfigError
from apikeys_shared.events import EXCHANGE

__all__ = ["ClientConfig", "KeyServiceConfig", "load_client_config", "load_config",
           "load_database_url"]


@dataclass(frozen=True)
class KeyServiceConfig:
    """key_service's configuration; build it with ``load_config()``."""

    secrets: Secrets = field(repr=False)
    database_url: str
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8081
    rabbitmq_url: str = DEFAULT_RABBITMQ_URL
    exchange: str = EXCHANGE
    event_source: str = "urn:apikeys:key_service"
    session_ttl_seconds: int = 8 * 3600
    # True / False: always / never mark the session cookie Secure; None ("auto"): when the
    # login request came over HTTPS, directly or as a trusted proxy's X-Forwarded-Proto says.
    cookie_secure: bool | None = None
    login_concurrency: int = 2
    trusted_proxies: tuple[str, ...] = ()
    # Who may read /metrics (IPs or networks of the connecting peer); None: everybody.
    metrics_allow: tuple[str, ...] | None = None
    log_level: str = "INFO"
    # Failed logins allowed per username / per client address in one window before 429.
    login_max_failures: int = 5  # per username from one address
    login_max_failures_per_address: int = 20
    login_max_failures_per_user: int = 100  # per username from every address together
    login_throttle_window_seconds: int = 900


def _networks(env: Env, name: str) -> tuple[str, ...]:
    """Comma-separated addresses or CIDR networks; ConfigError names a malformed one."""
    raw = env.optional(name) or ""
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{name}: {item!r} is not an IP address or network") from exc
    return items


def _cookie_secure(env: Env) -> bool | None:
    """``auto`` (the default: None) or a flag."""
    name = "KEY_SERVICE_COOKIE_SECURE"
    raw = (env.optional(name) or "").strip().lower()
    if raw in ("", "auto"):
        return None
    try:
        return env.flag(name, False)
    except ConfigError as exc:
        raise ConfigError(f"{name} must be auto, true or false, got {raw!r}") from exc


def _database(env: Env) -> tuple[str, Path]:
    data_dir = Path(env.text("KEY_SERVICE_DATA_DIR", "data"))
    default_db = f"sqlite+aiosqlite:///{data_dir / 'keys.db'}"
    url = env.url(
        "KEY_SERVICE_DATABASE_URL", default_db, ("sqlite+aiosqlite", "postgresql+asyncpg")
    )
    return url, data_dir


def load_database_url(environ: Mapping[str, str] | None = None) -> str:
    """Only the database URL (for ``migrate`` and ``create-admin``, which need no secrets)."""
    return _database(Env(os.environ if environ is None else environ))[0]


def load_config(environ: Mapping[str, str] | None = None) -> KeyServiceConfig:
    """Read every ``KEY_SERVICE_*`` and shared variable; ConfigError names a bad one."""
    env = Env(os.environ if environ is None else environ)
    database_url, data_dir = _database(env)
    return KeyServiceConfig(
        secrets=load_secrets(env, signer=True, verifier=False),
        database_url=database_url,
        data_dir=data_dir,
        host=env.text("KEY_SERVICE_HOST", "127.0.0.1"),
        port=env.integer("KEY_SERVICE_PORT", 8081, minimum=1, maximum=65535),
        rabbitmq_url=env.url("RABBITMQ_URL", DEFAULT_RABBITMQ_URL, ("amqp", "amqps")),
        exchange=env.text("APIKEYS_EXCHANGE", EXCHANGE),
        event_source=env.text("KEY_SERVICE_EVENT_SOURCE", "urn:apikeys:key_service"),
        session_ttl_seconds=env.integer(
            "KEY_SERVICE_SESSION_TTL", 8 * 3600, minimum=60, maximum=30 * 86400
        ),
        cookie_secure=_cookie_secure(env),
        login_concurrency=env.integer("KEY_SERVICE_LOGIN_CONCURRENCY", 2, minimum=1, maximum=64),
        trusted_proxies=_networks(env, "KEY_SERVICE_TRUSTED_PROXIES"),
        metrics_allow=(
            None if env.optional("KEY_SERVICE_METRICS_ALLOW") is None
            else _networks(env, "KEY_SERVICE_METRICS_ALLOW")
        ),
        log_level=env.log_level("KEY_SERVICE_LOG_LEVEL"),
        login_max_failures=env.integer(
            "KEY_SERVICE_LOGIN_MAX_FAILURES", 5, minimum=1, maximum=1000
        ),
        login_max_failures_per_address=env.integer(
            "KEY_SERVICE_LOGIN_MAX_FAILURES_PER_ADDRESS", 20, minimum=1, maximum=100000
        ),
        login_max_failures_per_user=env.integer(
            "KEY_SERVICE_LOGIN_MAX_FAILURES_PER_USER", 100, minimum=1, maximum=100000
        ),
        login_throttle_window_seconds=env.integer(
            "KEY_SERVICE_LOGIN_THROTTLE_WINDOW", 900, minimum=1, maximum=86400
        ),
    )


@dataclass(frozen=True)
class ClientConfig:
    """Where the command line's ``keys`` and ``audit`` commands send requests, and as whom."""

    url: str
    token: str = field(repr=False)


def load_client_config(
    environ: Mapping[str, str] | None = None, *, url: str | None = None,
    token: str | None = None,
) -> ClientConfig:
    """The API's base URL and the management token: the flags, else ``APIKEYS_URL`` and
    ``APIKEYS_TOKEN``; ConfigError names what is missing or malformed (never the token)."""
    env = Env(os.environ if environ is None else environ)
    base = (url or "").strip() or env.optional("APIKEYS_URL")
    if base is None:
        raise ConfigError(
            "no API address: set APIKEYS_URL (or give --url), e.g. http://127.0.0.1:8081"
        )
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(f"APIKEYS_URL / --url must be an http(s) base URL, got {base!r}")
    secret = (token or "").strip() or env.optional("APIKEYS_TOKEN")
    if secret is None:
        raise ConfigError(
            "no management token: set APIKEYS_TOKEN (or give --token); an administrator "
            "creates one on the Management Tokens page"
        )
    return ClientConfig(url=base.rstrip("/"), token=secret)
