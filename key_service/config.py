"""Every variable key_service reads, declared once (``SETTINGS``) and read in one function.

Each ``Setting`` holds its variable's default, bounds and meaning; the config dataclass takes its
defaults from them and docs/configuration.md is generated from ``SETTINGS``
(``scripts/configuration_docs.py``), so neither can drift from the code.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from apikeys_shared import config as shared
from apikeys_shared.config import Env, Secrets, load_secrets, verifiers
from apikeys_shared.errors import ConfigError
from apikeys_shared.rabbitmq_url import check_rabbitmq_url
from apikeys_shared.settings import Catalogue, Setting
from apikeys_shared.signing import Verifier

__all__ = [
    "CLIENT_SETTINGS", "SETTINGS", "ClientConfig", "KeyServiceConfig", "load_client_config",
    "load_config", "load_database_url",
]

HOST: Setting[str] = Setting(
    "KEY_SERVICE_HOST", "127.0.0.1", "listen address (`serve --host` overrides it)")
PORT: Setting[int] = Setting(
    "KEY_SERVICE_PORT", 8081, "listen port (`serve --port` overrides it)", 1, 65535)
DATA_DIR: Setting[str] = Setting(
    "KEY_SERVICE_DATA_DIR", "data", "where the default SQLite database file lives")
DATABASE_URL: Setting[str | None] = Setting(
    "KEY_SERVICE_DATABASE_URL", None, "the key database: `sqlite+aiosqlite:///path` or "
    "`postgresql+asyncpg://user:password@host:5432/db`",
    shown="`sqlite+aiosqlite:///<KEY_SERVICE_DATA_DIR>/keys.db`",
)
EVENT_SOURCE: Setting[str] = Setting(
    "KEY_SERVICE_EVENT_SOURCE", "urn:apikeys:key_service", "the events' CloudEvents `source`")
SESSION_TTL: Setting[int] = Setting(
    "KEY_SERVICE_SESSION_TTL", 8 * 3600, "browser session lifetime, seconds", 60, 30 * 86400)
COOKIE_SECURE: Setting[str] = Setting(
    "KEY_SERVICE_COOKIE_SECURE", "auto",
    "mark the session cookie `Secure`: `auto` when the login came over HTTPS (key_service's own "
    "TLS, or `X-Forwarded-Proto: https` from a peer in `KEY_SERVICE_TRUSTED_PROXIES`), or "
    "always `true` / never `false`",
)
LOGIN_CONCURRENCY: Setting[int] = Setting(
    "KEY_SERVICE_LOGIN_CONCURRENCY", 2, "argon2id password checks at once (64 MiB each)", 1, 64)
LOGIN_MAX_FAILURES: Setting[int] = Setting(
    "KEY_SERVICE_LOGIN_MAX_FAILURES", 5,
    "failed logins for one username from one client address in one window before 429 (for "
    "that address only: a stranger's guesses do not lock the account for its owner)", 1, 1000,
)
LOGIN_MAX_FAILURES_PER_ADDRESS: Setting[int] = Setting(
    "KEY_SERVICE_LOGIN_MAX_FAILURES_PER_ADDRESS", 20,
    "failed logins per client address in one window before 429 (an IPv6 address counts as its "
    "/64)", 1, 100_000,
)
LOGIN_MAX_FAILURES_PER_USER: Setting[int] = Setting(
    "KEY_SERVICE_LOGIN_MAX_FAILURES_PER_USER", 100,
    "failed logins for one username from every address together in one window before 429 "
    "everywhere but the addresses it logged in from within 30 days (a distributed guess; NIST "
    "SP 800-63B's ceiling)", 1, 100_000,
)
LOGIN_THROTTLE_WINDOW: Setting[int] = Setting(
    "KEY_SERVICE_LOGIN_THROTTLE_WINDOW", 900, "the login throttle's window, seconds", 1, 86400)
TRUSTED_PROXIES: Setting[str | None] = Setting(
    "KEY_SERVICE_TRUSTED_PROXIES", None,
    "IPs or CIDR networks, comma separated, whose `X-Forwarded-For` / `-Proto` are believed",
)
METRICS_ALLOW: Setting[str | None] = Setting(
    "KEY_SERVICE_METRICS_ALLOW", None,
    "IPs or CIDR networks of the peers `/metrics` is served to; others get 403 (the connecting "
    "address decides, never `X-Forwarded-For`). Unset: every peer",
)
LOG_LEVEL: Setting[str] = Setting(
    "KEY_SERVICE_LOG_LEVEL", "INFO", "`DEBUG`, `INFO`, `WARNING` or `ERROR`; JSON lines on stderr")
PUBLISHED_VERIFY_KEYS: Setting[str | None] = Setting(
    shared.VERIFY_KEYS.name, None,
    "verify keys published at `/api/v1/verify-keys` besides the signing key's own: during a "
    "rotation of the signing key, the previous one, whose signatures older events carry",
)
GATEWAY_GONE_AFTER: Setting[float] = Setting(
    "KEY_SERVICE_GATEWAY_GONE_AFTER", 10.0,
    "seconds without a heartbeat after which a gateway process counts as gone: listed in a "
    "revocation's receipt, never counted as confirmed (keep it a few times "
    "`GATEWAY_HEARTBEAT_INTERVAL`)", 1, 3600,
)

SETTINGS = Catalogue.of("key_service", (
    "`python -m key_service serve` (also `migrate`, `create-admin`, `create-user`, "
    "`generate-secrets`; `--help` on each). `serve` migrates the database first."
), (
    shared.PEPPERS, shared.SIGNING_KEY, shared.INTERNAL_TOKEN, PUBLISHED_VERIFY_KEYS,
    HOST, PORT, DATA_DIR, DATABASE_URL, shared.RABBITMQ_URL, shared.EXCHANGE, EVENT_SOURCE,
    SESSION_TTL, COOKIE_SECURE, LOGIN_CONCURRENCY, LOGIN_MAX_FAILURES,
    LOGIN_MAX_FAILURES_PER_ADDRESS, LOGIN_MAX_FAILURES_PER_USER, LOGIN_THROTTLE_WINDOW,
    TRUSTED_PROXIES, METRICS_ALLOW, LOG_LEVEL, GATEWAY_GONE_AFTER,
))


@dataclass(frozen=True)
class KeyServiceConfig:
    """key_service's configuration; build it with ``load_config()``."""

    secrets: Secrets = field(repr=False)
    database_url: str
    data_dir: Path
    host: str = HOST.default
    port: int = PORT.default
    rabbitmq_url: str = shared.RABBITMQ_URL.default
    exchange: str = shared.EXCHANGE.default
    event_source: str = EVENT_SOURCE.default
    session_ttl_seconds: int = SESSION_TTL.default
    # True / False: always / never mark the session cookie Secure; None ("auto"): when the
    # login request came over HTTPS, directly or as a trusted proxy's X-Forwarded-Proto says.
    cookie_secure: bool | None = None
    login_concurrency: int = LOGIN_CONCURRENCY.default
    trusted_proxies: tuple[str, ...] = ()
    # Who may read /metrics (IPs or networks of the connecting peer); None: everybody.
    metrics_allow: tuple[str, ...] | None = None
    log_level: str = LOG_LEVEL.default
    # Failed logins allowed per username / per client address in one window before 429.
    login_max_failures: int = LOGIN_MAX_FAILURES.default  # per username from one address
    login_max_failures_per_address: int = LOGIN_MAX_FAILURES_PER_ADDRESS.default
    login_max_failures_per_user: int = LOGIN_MAX_FAILURES_PER_USER.default
    login_throttle_window_seconds: int = LOGIN_THROTTLE_WINDOW.default
    # Verify keys published besides the signing key's own (APIKEYS_VERIFY_KEYS): during a
    # rotation, the previous key, which signed the older events of the feed.
    verify_keys: Verifier | None = None
    # Seconds without a heartbeat after which a gateway process is gone.
    gateway_gone_after: float = GATEWAY_GONE_AFTER.default


def _networks(env: Env, setting: Setting[str | None]) -> tuple[str, ...] | None:
    """Comma-separated addresses or CIDR networks (None when unset); ConfigError names a bad one."""
    raw = setting.optional(env)
    if raw is None:
        return None
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ConfigError(
                f"{setting.name}: {item!r} is not an IP address or network") from exc
    return items


def _cookie_secure(env: Env) -> bool | None:
    """``auto`` (None) or a flag."""
    raw = COOKIE_SECURE.text(env).lower()
    if raw == "auto":
        return None
    try:
        return env.flag(COOKIE_SECURE.name, False)
    except ConfigError as exc:
        raise ConfigError(
            f"{COOKIE_SECURE.name} must be auto, true or false, got {raw!r}") from exc


def _database(env: Env) -> tuple[str, Path]:
    data_dir = Path(DATA_DIR.text(env))
    url = env.url(
        DATABASE_URL.name, f"sqlite+aiosqlite:///{data_dir / 'keys.db'}",
        ("sqlite+aiosqlite", "postgresql+asyncpg"),
    )
    return url, data_dir


def _published_verify_keys(env: Env) -> Verifier | None:
    """``APIKEYS_VERIFY_KEYS`` when set: optional here (the signing key's own is always known)."""
    raw = PUBLISHED_VERIFY_KEYS.optional(env)
    return None if raw is None else verifiers(raw)


def load_database_url(environ: Mapping[str, str] | None = None) -> str:
    """Only the database URL (for ``migrate`` and ``create-admin``, which need no secrets)."""
    return _database(Env(os.environ if environ is None else environ))[0]


def load_config(environ: Mapping[str, str] | None = None) -> KeyServiceConfig:
    """Read every variable of ``SETTINGS``; ConfigError names a bad one."""
    env = Env(os.environ if environ is None else environ)
    database_url, data_dir = _database(env)
    return KeyServiceConfig(
        secrets=load_secrets(env, signer=True, verifier=False),
        database_url=database_url,
        data_dir=data_dir,
        host=HOST.text(env),
        port=PORT.integer(env),
        rabbitmq_url=check_rabbitmq_url(shared.RABBITMQ_URL.text(env)),
        exchange=shared.EXCHANGE.text(env),
        event_source=EVENT_SOURCE.text(env),
        session_ttl_seconds=SESSION_TTL.integer(env),
        cookie_secure=_cookie_secure(env),
        login_concurrency=LOGIN_CONCURRENCY.integer(env),
        trusted_proxies=_networks(env, TRUSTED_PROXIES) or (),
        metrics_allow=_networks(env, METRICS_ALLOW),
        log_level=LOG_LEVEL.log_level(env),
        login_max_failures=LOGIN_MAX_FAILURES.integer(env),
        login_max_failures_per_address=LOGIN_MAX_FAILURES_PER_ADDRESS.integer(env),
        login_max_failures_per_user=LOGIN_MAX_FAILURES_PER_USER.integer(env),
        login_throttle_window_seconds=LOGIN_THROTTLE_WINDOW.integer(env),
        verify_keys=_published_verify_keys(env),
        gateway_gone_after=GATEWAY_GONE_AFTER.number(env),
    )


CLIENT_URL: Setting[str | None] = Setting(
    "APIKEYS_URL", None, "key_service's base URL, e.g. `http://127.0.0.1:8081` (`--url`)",
    shown="required")
CLIENT_TOKEN: Setting[str | None] = Setting(
    "APIKEYS_TOKEN", None,
    "a management token (`ksmt_...`) with the scopes the command needs (`--token`)",
    shown="required")

CLIENT_SETTINGS = Catalogue.of("command line", (
    "`python -m key_service keys list|show|issue|revoke|roll` and `python -m key_service audit` "
    "talk to a running key_service ([operations.md](operations.md)); the flags win over these."
), (CLIENT_URL, CLIENT_TOKEN))


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
    base = (url or "").strip() or CLIENT_URL.optional(env)
    if base is None:
        raise ConfigError(
            "no API address: set APIKEYS_URL (or give --url), e.g. http://127.0.0.1:8081"
        )
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(f"APIKEYS_URL / --url must be an http(s) base URL, got {base!r}")
    secret = (token or "").strip() or CLIENT_TOKEN.optional(env)
    if secret is None:
        raise ConfigError(
            "no management token: set APIKEYS_TOKEN (or give --token); an administrator "
            "creates one on the Management Tokens page"
        )
    return ClientConfig(url=base.rstrip("/"), token=secret)
