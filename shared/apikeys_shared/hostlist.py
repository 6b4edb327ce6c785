"""Comma-separated ``host[:port]`` lists, as the URLs of clustered services write them.

A Redis Sentinel or Cluster URL and a RabbitMQ URL with several nodes name their servers the
same way: ``host1:port,host2,[2001:db8::1]:port`` (IPv6 in brackets, a default port for a host
without one). Errors name the setting but never quote the text: a password holding ``/`` or
``?`` ends the authority early, and its first part would land here.
"""

from __future__ import annotations

from .errors import ConfigError

__all__ = ["format_host", "parse_host_list"]


def parse_host_list(hosts: str, default_port: int, what: str) -> tuple[tuple[str, int], ...]:
    """``(host, port)`` pairs of ``hosts``; ConfigError naming ``what`` for a malformed one."""
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            raise ConfigError(f"{what} has an empty host in its host list")
        if item.startswith("["):
            host, bracket, rest = item[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ConfigError(f"{what} has a malformed IPv6 host in its host list")
            port_text = rest[1:]
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ConfigError(f"{what} has an empty host in its host list")
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ConfigError(f"{what} has a bad port in its host list")
            port = int(port_text)
        else:
            port = default_port
        nodes.append((host, port))
    return tuple(nodes)


def format_host(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
