"""Parsing RABBITMQ_URL with one or several brokers into one URL per node."""

from __future__ import annotations

import pytest

from apikeys_shared.amqp import BrokerAddresses, check_rabbitmq_url, parse_rabbitmq_url
from apikeys_shared.errors import ConfigError


def _urls(url: str, **defaults: str) -> list[str]:
    return [a.url for a in parse_rabbitmq_url(url, query_defaults=defaults)]


def test_one_host_is_the_same_url() -> None:
    assert _urls("amqp://guest:guest@127.0.0.1:5672/") == ["amqp://guest:guest@127.0.0.1:5672/"]


def test_each_host_gets_the_credentials_vhost_and_query() -> None:
    url = "amqp://app:p%40ss@rabbit1:5672,rabbit2:5673,[2001:db8::7]/prod?heartbeat=10"
    assert _urls(url) == [
        "amqp://app:p%40ss@rabbit1:5672/prod?heartbeat=10",
        "amqp://app:p%40ss@rabbit2:5673/prod?heartbeat=10",
        "amqp://app:p%40ss@[2001:db8::7]:5672/prod?heartbeat=10",
    ]
    assert [a.name for a in parse_rabbitmq_url(url)] == [
        "rabbit1:5672", "rabbit2:5673", "[2001:db8::7]:5672",
    ]


def test_default_ports_follow_the_scheme_and_a_url_may_omit_user_and_vhost() -> None:
    assert _urls("amqps://r1,r2") == ["amqps://r1:5671", "amqps://r2:5671"]
    assert _urls("amqp://r1,r2:6000") == ["amqp://r1:5672", "amqp://r2:6000"]


def test_query_defaults_are_added_unless_the_url_sets_them() -> None:
    assert _urls("amqp://u:p@r1,r2/", heartbeat="5") == [
        "amqp://u:p@r1:5672/?heartbeat=5", "amqp://u:p@r2:5672/?heartbeat=5",
    ]
    assert _urls("amqp://u:p@r1/v?heartbeat=30&name=x", heartbeat="5") == [
        "amqp://u:p@r1:5672/v?heartbeat=30&name=x",
    ]
    assert _urls("amqp://u:p@r1/v?name=x", heartbeat="5") == [
        "amqp://u:p@r1:5672/v?name=x&heartbeat=5",
    ]


@pytest.mark.parametrize(("url", "problem"), [
    ("http://r1:5672/", "amqp or amqps URL"),
    ("r1:5672", "amqp or amqps URL"),
    ("amqp://u:p@/vhost", "must name a host"),
    ("amqp://r1,,r2/", "empty host"),
    ("amqp://r1:0/", "bad port"),
    ("amqp://r1:56720000/", "bad port"),
    ("amqp://r1:x/", "bad port"),
    ("amqp://[::1/", "IPv6"),
    ("amqp://r1/#frag", "fragment"),
])
def test_malformed_urls_name_the_setting_and_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        check_rabbitmq_url(url, "RABBITMQ_URL")
    assert "RABBITMQ_URL" in str(caught.value)


def test_errors_and_reprs_never_show_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rabbitmq_url("amqp://app:s3cr3tpass@r1:bad/")
    assert "s3cr3tpass" not in str(caught.value)
    assert "s3cr3tpass" not in repr(parse_rabbitmq_url("amqp://app:s3cr3tpass@r1,r2/"))


def test_no_address_is_connected_before_the_first_connection() -> None:
    brokers = BrokerAddresses("amqp://r1,r2,r3/")
    assert [a.name for a in brokers.addresses] == ["r1:5672", "r2:5672", "r3:5672"]
    assert brokers.connected is None
