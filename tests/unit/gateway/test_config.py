"""Every setting read in one place; a bad one is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from apikeys_shared.errors import ConfigError
from auth_gateway.config import load_config


def test_defaults(secrets_env: dict[str, str]) -> None:
    config = load_config({**secrets_env, "GATEWAY_ROUTES": "routes.toml"})
    assert (config.host, config.port, config.workers) == ("127.0.0.1", 8080, 1)
    assert config.key_service_url == "http://127.0.0.1:8081"
    assert config.redis_prefix == "apikeys:"
    assert config.exchange == "apikeys.events"
    assert config.feed_poll_interval == 2.0
    assert config.feed_safety_interval == 10.0
    assert config.failed_auth_sync == 0.25
    assert config.limits.min_upload_rate == 1024
    assert config.limits.max_body_bytes == 1024**3
    assert config.limits.upstream_idle_timeout == 1.5
    assert config.secrets.verifier is not None
    assert config.secrets.signer is None
    assert (config.unix_socket, config.unix_socket_mode) == (None, 0o660)
    assert config.metrics_allow is None
    assert "APIKEYS" not in repr(config)


def test_unix_socket_settings(secrets_env: dict[str, str], tmp_path: Path) -> None:
    config = load_config({
        **secrets_env, "GATEWAY_ROUTES": "routes.toml",
        "GATEWAY_UNIX_SOCKET": str(tmp_path / "gw.sock"), "GATEWAY_UNIX_SOCKET_MODE": "0666",
        "GATEWAY_TRUSTED_PROXIES": "unix:, 10.0.0.0/8",
    })
    assert config.unix_socket == str(tmp_path / "gw.sock")
    assert config.unix_socket_mode == 0o666
    assert config.trusted_proxies == ("unix:", "10.0.0.0/8")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/no/such/directory/gw.sock", "the directory of '/no/such/directory/gw.sock' does not"),
        ("/tmp/" + "x" * 120, "longer than a Unix socket path may be"),
    ],
)
def test_bad_unix_socket_paths_are_named(
    secrets_env: dict[str, str], value: str, expected: str
) -> None:
    env = {**secrets_env, "GATEWAY_ROUTES": "routes.toml", "GATEWAY_UNIX_SOCKET": value}
    with pytest.raises(ConfigError, match=f"GATEWAY_UNIX_SOCKET: .*{expected}"):
        load_config(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PORT", "http"),
        ("GATEWAY_PORT", "70000"),
        ("GATEWAY_WORKERS", "0"),
        ("KEY_SERVICE_URL", "ftp://x"),
        ("REDIS_URL", "http://x"),
        ("GATEWAY_L1_TTL", "-1"),
        ("GATEWAY_FAILED_AUTH_THRESHOLD", "0"),
        ("GATEWAY_FAILED_AUTH_SYNC", "0"),
        ("GATEWAY_MIN_UPLOAD_RATE", "-1"),
        ("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8, nonsense"),
        ("GATEWAY_TRUSTED_PROXIES", "unix"),
        ("GATEWAY_METRICS_ALLOW", "10.0.0.0/8, prometheus"),
        ("GATEWAY_UNIX_SOCKET_MODE", "rw-rw----"),
        ("GATEWAY_UNIX_SOCKET_MODE", "1777"),
        ("GATEWAY_UNIX_SOCKET_MODE", "8"),
        ("GATEWAY_LOG_LEVEL", "chatty"),
        ("GATEWAY_UPSTREAM_TIMEOUT", "soon"),
        ("GATEWAY_UPSTREAM_IDLE_TIMEOUT", "0"),
        ("GATEWAY_FEED_SAFETY_INTERVAL", "0"),
    ],
)
def test_bad_values_are_named(secrets_env: dict[str, str], name: str, value: str) -> None:
    env = {**secrets_env, "GATEWAY_ROUTES": "routes.toml", name: value}
    with pytest.raises(ConfigError, match=name):
        load_config(env)


@pytest.mark.parametrize(
    "missing",
    ["GATEWAY_ROUTES", "APIKEYS_VERIFY_KEYS", "APIKEYS_PEPPERS", "APIKEYS_INTERNAL_TOKEN"],
)
def test_missing_required_is_named(secrets_env: dict[str, str], missing: str) -> None:
    env = {**secrets_env, "GATEWAY_ROUTES": "routes.toml"}
    del env[missing]
    with pytest.raises(ConfigError, match=missing):
        load_config(env)


def test_signing_key_is_not_needed(secrets_env: dict[str, str]) -> None:
    env = {**secrets_env, "GATEWAY_ROUTES": "r.toml"}
    del env["APIKEYS_SIGNING_KEY"]
    assert load_config(env).secrets.signer is None


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "unix:///run/redis.sock?db=1",
        "redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380/apikeys/2",
        "rediss+cluster://10.0.0.1:7000,10.0.0.2:7000",
    ],
)
def test_every_redis_topology_is_accepted(secrets_env: dict[str, str], url: str) -> None:
    env = {**secrets_env, "GATEWAY_ROUTES": "r.toml", "REDIS_URL": url}
    assert load_config(env).redis_url == url


@pytest.mark.parametrize(
    "url",
    ["redis+sentinel://10.0.0.1", "redis+cluster://10.0.0.1/3", "redis+cluster://a:x"],
)
def test_bad_sentinel_and_cluster_urls_are_named(secrets_env: dict[str, str], url: str) -> None:
    env = {**secrets_env, "GATEWAY_ROUTES": "r.toml", "REDIS_URL": url}
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_config(env)


def test_dead_letter_exchange_is_optional(secrets_env: dict[str, str]) -> None:
    env = {**secrets_env, "GATEWAY_ROUTES": "r.toml"}
    assert load_config(env).dead_letter_exchange is None
    env["GATEWAY_DEAD_LETTER_EXCHANGE"] = "apikeys.rejected"
    assert load_config(env).dead_letter_exchange == "apikeys.rejected"
