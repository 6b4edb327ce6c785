"""Configuration: every bad or missing variable is named in the error."""

from __future__ import annotations

import pytest

from apikeys_shared.config import Env, generate_secrets, generate_secrets_env, load_secrets
from apikeys_shared.errors import ConfigError
from apikeys_shared.keys import generate_secret, new_key_id
from apikeys_shared.signing import Verifier


def _env() -> dict[str, str]:
    return generate_secrets()


def test_generated_secrets_load_and_work_together() -> None:
    loaded = load_secrets(Env(_env()), signer=True, verifier=True)
    assert loaded.signer is not None
    assert loaded.verifier is not None
    assert loaded.signer.key_id in loaded.verifier.key_ids
    key_id, secret = new_key_id(), generate_secret()
    digest, version = loaded.peppers.hash(key_id, secret)
    assert loaded.peppers.verify(key_id, secret, digest, version)
    again = Verifier.from_base64([loaded.signer.verify_key_base64])
    assert again.key_ids == loaded.verifier.key_ids


def test_generated_secrets_differ_each_time() -> None:
    assert _env() != _env()


@pytest.mark.parametrize(
    "name", ["APIKEYS_PEPPERS", "APIKEYS_SIGNING_KEY", "APIKEYS_VERIFY_KEYS",
             "APIKEYS_INTERNAL_TOKEN"],
)
def test_each_missing_secret_is_named(name: str) -> None:
    env = _env()
    del env[name]
    with pytest.raises(ConfigError, match=name):
        load_secrets(Env(env), signer=True, verifier=True)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APIKEYS_PEPPERS", "nocolon"),
        ("APIKEYS_PEPPERS", "p1:not-base64!"),
        ("APIKEYS_PEPPERS", "p1:c2hvcnQ="),
        ("APIKEYS_PEPPERS", "p1:MTExMTExMTExMTExMTExMTExMTE=,p1:MTExMTExMTExMTExMTExMTExMTE="),
        ("APIKEYS_SIGNING_KEY", "c2hvcnQ="),
        ("APIKEYS_SIGNING_KEY", "%%%"),
        ("APIKEYS_VERIFY_KEYS", "c2hvcnQ="),
        ("APIKEYS_VERIFY_KEYS", ","),
        ("APIKEYS_INTERNAL_TOKEN", "short"),
    ],
)
def test_malformed_secrets_are_named(name: str, value: str) -> None:
    env = {**_env(), name: value}
    with pytest.raises(ConfigError, match=name):
        load_secrets(Env(env), signer=True, verifier=True)


def test_older_peppers_still_verify_after_rotation() -> None:
    env = _env()
    old = env["APIKEYS_PEPPERS"]
    key_id, secret = new_key_id(), generate_secret()
    before = load_secrets(Env(env), signer=False, verifier=False)
    digest, version = before.peppers.hash(key_id, secret)
    rotated_value = "p2:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk=" + "," + old
    rotated = load_secrets(Env({**env, "APIKEYS_PEPPERS": rotated_value}),
                           signer=False, verifier=False)
    assert rotated.peppers.current == "p2"
    assert rotated.peppers.verify(key_id, secret, digest, version)


def test_typed_helpers_name_the_variable() -> None:
    env = Env({"N": "abc", "B": "maybe", "U": "ftp://x", "F": "nan", "H": "amqp://"})
    with pytest.raises(ConfigError, match=r"^N "):
        env.integer("N", 1)
    with pytest.raises(ConfigError, match=r"^B "):
        env.flag("B", False)
    with pytest.raises(ConfigError, match=r"^U "):
        env.url("U", None, ("http",))
    with pytest.raises(ConfigError, match=r"^F "):
        env.number("F", 1.0, minimum=0)
    with pytest.raises(ConfigError, match=r"^H "):
        env.url("H", None, ("amqp",))
    with pytest.raises(ConfigError, match=r"^MISSING is required"):
        env.text("MISSING")
    assert Env({"X": " 5 "}).integer("X", 1, minimum=1, maximum=9) == 5
    assert Env({}).flag("X", True) is True
    assert Env({"X": "off"}).flag("X", True) is False
    assert Env({"X": "  "}).optional("X") is None
    with pytest.raises(ConfigError, match="at most 9"):
        Env({"X": "10"}).integer("X", 1, maximum=9)


@pytest.mark.parametrize("url", [
    # A password with "/" or "?" in it (base64 has "/") ends the authority early, so the
    # parser sees "user:password-prefix" as a host list: the error must not quote it.
    "redis+sentinel://default:s3cr/et@h1:26379/mymaster",
    "redis+cluster://default:s3cr?et@h1:6379",
    "redis+sentinel://default:[s3cr/et@h1/mymaster",
    "redis+sentinel://default:123/s3cr/et@h1/mymaster",
])
def test_redis_url_errors_never_quote_a_password(url: str) -> None:
    from apikeys_shared.redis_url import parse_redis_url

    with pytest.raises(ConfigError) as info:
        parse_redis_url(url)
    assert "s3cr" not in str(info.value)
    assert "et@h1" not in str(info.value)
    assert "REDIS_URL" in str(info.value)


def test_an_unparsable_url_is_a_config_error_naming_the_variable() -> None:
    env = Env({"KEY_SERVICE_DATABASE_URL": "postgresql+asyncpg://u:s3cret@[::1/db"})
    with pytest.raises(ConfigError) as info:
        env.url("KEY_SERVICE_DATABASE_URL", None, ("postgresql+asyncpg",))
    assert "KEY_SERVICE_DATABASE_URL" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_the_env_file_form_holds_every_secret_and_loads() -> None:
    text = generate_secrets_env()
    lines = text.splitlines()
    assert lines[0].startswith("#")
    values = dict(line.split("=", 1) for line in lines[1:])
    assert set(values) == {
        "APIKEYS_PEPPERS", "APIKEYS_SIGNING_KEY", "APIKEYS_VERIFY_KEYS", "APIKEYS_INTERNAL_TOKEN",
    }
    loaded = load_secrets(Env(values), signer=True, verifier=True)
    assert loaded.signer is not None
    assert loaded.verifier is not None
    assert loaded.signer.key_id in loaded.verifier.key_ids
