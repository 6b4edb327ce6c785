"""``RABBITMQ_URL`` with one node or several, parsed (no AMQP client is imported here).

The form, and why several nodes, are in ``apikeys_shared.amqp``, which connects; this module only
reads the URL, so that configuration (and ``--help``) never loads the AMQP client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from .errors import ConfigError
from .hostlist import format_host, parse_host_list

__all__ = ["BrokerAddress", "check_rabbitmq_url", "parse_rabbitmq_url"]

_DEFAULT_PORT = {"amqp": 5672, "amqps": 5671}


@dataclass(frozen=True)
class BrokerAddress:
    """One node of ``RABBITMQ_URL``: its own single-host URL, and ``host:port`` for logs."""

    url: str = field(repr=False)
    name: str


def parse_rabbitmq_url(url: str, what: str = "RABBITMQ_URL",
                       query_defaults: Mapping[str, str] | None = None,
                       ) -> tuple[BrokerAddress, ...]:
    """One address per host of ``url``, in order; ConfigError names ``what`` and the problem.

    ``query_defaults``: query parameters every address gets unless ``url`` sets them.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _DEFAULT_PORT:
        raise ConfigError(f"{what} must be an amqp or amqps URL")
    location, _, query = rest.partition("?")
    if "#" in query or "#" in location:
        raise ConfigError(f"{what} must not have a fragment")
    authority, slash, path = location.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if not at:
        hosts = authority
    if not hosts:
        raise ConfigError(f"{what} must name a host")
    given = parse_qs(query, keep_blank_values=True)
    extra = [f"{k}={v}" for k, v in (query_defaults or {}).items() if k not in given]
    query = "&".join([query, *extra] if query else extra)
    suffix = (slash + path) + ("?" + query if query else "")
    prefix = f"{scheme}://{userinfo}{at}"
    return tuple(
        BrokerAddress(url=f"{prefix}{format_host(host, port)}{suffix}",
                      name=format_host(host, port))
        for host, port in parse_host_list(hosts, _DEFAULT_PORT[scheme], what)
    )


def check_rabbitmq_url(url: str, what: str = "RABBITMQ_URL") -> str:
    """``url`` itself, once every address in it parses; ConfigError naming ``what`` if not."""
    parse_rabbitmq_url(url, what)
    return url
