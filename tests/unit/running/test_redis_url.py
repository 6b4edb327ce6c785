"""Parsing the Redis URL forms: single server, Sentinel, Cluster."""

from __future__ import annotations

import pytest

from apikeys_shared.errors import ConfigError
from apikeys_shared.redis_url import parse_redis_url


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0",
    "rediss://:secret@cache.example:6380/2",
    "unix:///run/redis/redis.sock?db=1",
])
def test_single_servers_are_left_to_redis_py(url: str) -> None:
    target = parse_redis_url(url)
    assert target.topology == "single"
    assert target.url == url


def test_sentinel_url_with_hosts_service_db_and_passwords() -> None:
    target = parse_redis_url(
        "redis+sentinel://app:p%40ss@s1:26379,s2,[::1]:26380/mymaster/3"
        "?sentinel_password=sp&sentinel_username=su"
    )
    assert target.topology == "sentinel"
    assert target.nodes == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert target.service_name == "mymaster"
    assert target.db == 3
    assert (target.username, target.password) == ("app", "p@ss")
    assert (target.sentinel_username, target.sentinel_password) == ("su", "sp")
    assert not target.tls


def test_sentinel_defaults_db_0_and_tls_scheme() -> None:
    target = parse_redis_url("rediss+sentinel://:pw@sentinel.example/cache")
    assert target.db == 0
    assert target.tls
    assert target.username is None
    assert target.password == "pw"
    assert target.nodes == (("sentinel.example", 26379),)


def test_cluster_url_with_seed_nodes() -> None:
    target = parse_redis_url("redis+cluster://:pw@n1:7000,n2:7001,n3")
    assert target.topology == "cluster"
    assert target.nodes == (("n1", 7000), ("n2", 7001), ("n3", 6379))
    assert target.password == "pw"
    assert target.service_name is None


def test_secrets_stay_out_of_the_repr() -> None:
    text = repr(parse_redis_url("redis+sentinel://:hunter2hunter2@s1/m?sentinel_password=zz9zz9"))
    assert "hunter2hunter2" not in text
    assert "zz9zz9" not in text


@pytest.mark.parametrize(("url", "problem"), [
    ("http://127.0.0.1:6379", "schemes"),
    ("127.0.0.1:6379", "schemes"),
    ("redis://", "must name a host"),
    ("redis+sentinel://s1:26379", "/service_name"),
    ("redis+sentinel://s1:26379/m/x", "database must be a number"),
    ("redis+sentinel://s1:26379/m/1/extra", "/service_name"),
    ("redis+sentinel://s1:99999/m", "bad port"),
    ("redis+sentinel://s1,,s2/m", "empty host"),
    ("redis+sentinel://[::1/m", "IPv6"),
    ("redis+sentinel://s1/m?socket_timeout=1", "unsupported query parameters: socket_timeout"),
    ("redis+cluster://n1:7000/0", "no database"),
    ("redis+cluster://n1:7000?sentinel_password=x", "unsupported query"),
])
def test_bad_urls_are_named_with_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_URL") as info:
        parse_redis_url(url)
    assert problem in str(info.value)
