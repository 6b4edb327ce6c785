"""key_service's settings: defaults, and errors that name the variable."""

from __future__ import annotations

import pytest

from apikeys_shared.config import generate_secrets
from apikeys_shared.errors import ConfigError
from key_service.config import load_config, load_database_url


def _secrets() -> dict[str, str]:
    return generate_secrets()


def test_defaults() -> None:
    config = load_config({**_secrets(), "KEY_SERVICE_DATA_DIR": "/srv/ks"})
    assert config.database_url == "sqlite+aiosqlite:////srv/ks/keys.db"
    assert (config.host, config.port) == ("127.0.0.1", 8081)
    assert config.cookie_secure is None  # auto: Secure when the login came over HTTPS
    assert config.login_concurrency == 2
    assert (config.login_max_failures, config.login_max_failures_per_address,
            config.login_max_failures_per_user) == (5, 20, 100)
    assert config.login_throttle_window_seconds == 900
    assert config.trusted_proxies == ()
    assert config.metrics_allow is None  # /metrics for every peer unless told otherwise
    assert load_database_url({"KEY_SERVICE_DATA_DIR": "/srv/ks"}) == config.database_url


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", None), ("AUTO", None), ("true", True), ("off", False)],
)
def test_cookie_secure_is_auto_or_a_flag(value: str, expected: bool | None) -> None:
    config = load_config({**_secrets(), "KEY_SERVICE_COOKIE_SECURE": value})
    assert config.cookie_secure is expected


def test_trusted_proxies_are_checked() -> None:
    config = load_config({**_secrets(), "KEY_SERVICE_TRUSTED_PROXIES": "10.0.0.0/8, ::1"})
    assert config.trusted_proxies == ("10.0.0.0/8", "::1")
    with pytest.raises(ConfigError, match="KEY_SERVICE_TRUSTED_PROXIES"):
        load_config({**_secrets(), "KEY_SERVICE_TRUSTED_PROXIES": "10.0.0.0/8,proxy.local"})


def test_metrics_allow_is_checked() -> None:
    config = load_config({**_secrets(), "KEY_SERVICE_METRICS_ALLOW": "10.0.0.0/8, ::1"})
    assert config.metrics_allow == ("10.0.0.0/8", "::1")
    with pytest.raises(ConfigError, match="KEY_SERVICE_METRICS_ALLOW"):
        load_config({**_secrets(), "KEY_SERVICE_METRICS_ALLOW": "10.0.0.0/8, prometheus"})


@pytest.mark.parametrize(
    ("name", "value"),
    [("KEY_SERVICE_LOGIN_MAX_FAILURES", "0"), ("KEY_SERVICE_LOGIN_THROTTLE_WINDOW", "soon"),
     ("KEY_SERVICE_LOGIN_MAX_FAILURES_PER_ADDRESS", "-1"),
     ("KEY_SERVICE_LOGIN_MAX_FAILURES_PER_USER", "0"), ("KEY_SERVICE_COOKIE_SECURE", "maybe"),
     ("KEY_SERVICE_LOG_LEVEL", "verbose"),
     ("KEY_SERVICE_DATABASE_URL", "mysql://db/keys")],
)
def test_bad_values_are_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config({**_secrets(), name: value})
