"""One Redis URL for every topology: a single server, Sentinel, or Cluster.

redis-py understands ``redis://``, ``rediss://`` and ``unix://`` itself, but has no URL form for
Sentinel or for a Cluster with several seed nodes, and a deployment should change topology by
changing one setting (``REDIS_URL``), not code. The forms:

==========================================================  =====================================
``redis://[[user]:password@]host[:port][/db]``              one server (``rediss://``: TLS)
``unix://[[user]:password@]/path/to/socket[?db=N]``         one server on a Unix socket
``redis+sentinel://[[user]:password@]host[:port][,host      the master of ``service`` as the
[:port]...]/service[/db][?sentinel_password=...]``          Sentinels name it (default port 26379;
                                                            ``rediss+sentinel://``: TLS to Redis)
``redis+cluster://[[user]:password@]host[:port][,host       a Redis Cluster, from these seed
[:port]...]``                                               nodes (``rediss+cluster://``: TLS)
==========================================================  =====================================

User name and password belong to the Redis servers; a Sentinel's own password, if it has one, is
``sentinel_password`` (and ``sentinel_username``) in the query. The Cluster has database 0 only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from .errors import ConfigError

__all__ = ["SCHEMES", "RedisTarget", "parse_redis_url", "redis_from_url"]

Topology = Literal["single", "sentinel", "cluster"]
SCHEMES = (
    "redis", "rediss", "unix",
    "redis+sentinel", "rediss+sentinel",
    "redis+cluster", "rediss+cluster",
)
_DEFAULT_PORT = {"sentinel": 26379, "cluster": 6379}
_SENTINEL_QUERY = {"sentinel_password", "sentinel_username"}
_PARAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Sentinel or Cluster URL (single servers keep their URL for redis-py)."""

    topology: Topology
    url: str = field(repr=False)
    nodes: tuple[tuple[str, int], ...] = ()
    service_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    tls: bool = False


def _nodes(hosts: str, default_port: int, url_name: str) -> tuple[tuple[str, int], ...]:
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            raise ConfigError(f"{url_name} has an empty host in its host list")
        if item.startswith("["):
            host, bracket, rest = item[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                # Never quote the item: a password holding "/" or "?" ends the authority early
                # and lands here as "user:password-prefix".
                raise ConfigError(f"{url_name} has a malformed IPv6 host in its host list")
            port_text = rest[1:]
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ConfigError(f"{url_name} has an empty host in its host list")
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ConfigError(f"{url_name} has a bad port in its host list")
            port = int(port_text)
        else:
            port = default_port
        nodes.append((host, port))
    return tuple(nodes)


def parse_redis_url(url: str, what: str = "REDIS_URL") -> RedisTarget:
    """Parse and check ``url``; ConfigError names ``what`` and the problem."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ConfigError(f"{what} must be a URL with one of the schemes {', '.join(SCHEMES)}")
    if scheme in ("redis", "rediss", "unix"):
        parts = urlsplit(url)
        if scheme != "unix" and not parts.hostname:
            raise ConfigError(f"{what} must name a host")
        if scheme == "unix" and not parts.path:
            raise ConfigError(f"{what} must name a socket path")
        return RedisTarget(topology="single", url=url)
    base, _, topology_name = scheme.partition("+")
    topology: Topology = "sentinel" if topology_name == "sentinel" else "cluster"
    location, _, query_text = rest.partition("?")
    authority, slash, path = location.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if not at:
        hosts, userinfo = authority, ""
    username = password = None
    if userinfo:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    query = {k: v[-1] for k, v in parse_qs(query_text, keep_blank_values=True).items()}
    unknown = sorted(set(query) - _SENTINEL_QUERY) if topology == "sentinel" else sorted(query)
    if unknown:
        # Named only when they look like parameter names: after a "?" in a password, the
        # "names" are the rest of the password.
        shown = [n for n in unknown if _PARAM_NAME.fullmatch(n)]
        named = f": {', '.join(shown)}" if len(shown) == len(unknown) else ""
        raise ConfigError(f"{what} has unsupported query parameters{named}")
    nodes = _nodes(hosts, _DEFAULT_PORT[topology], what)
    segments = [s for s in path.split("/") if s] if slash else []
    service_name: str | None = None
    db = 0
    if topology == "sentinel":
        if not segments or len(segments) > 2:
            raise ConfigError(f"{what} must end in /service_name or /service_name/db")
        service_name = unquote(segments[0])
        if len(segments) == 2:
            if not segments[1].isdigit():
                raise ConfigError(f"{what}: the database must be a number (after the service name)")
            db = int(segments[1])
    elif segments:
        raise ConfigError(f"{what}: a Redis Cluster has no database or service name in its URL")
    return RedisTarget(
        topology=topology, url=url, nodes=nodes, service_name=service_name, db=db,
        username=username, password=password,
        sentinel_username=query.get("sentinel_username") or None,
        sentinel_password=query.get("sentinel_password") or None,
        tls=base == "rediss",
    )


class SentinelManagedRedis(aioredis.Redis):
    """The master client of a Sentinel URL; closing it closes the Sentinel connections too."""

    _sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the master's pool and every Sentinel client."""
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self._sentinel is not None:
                await self._sentinel.aclose()


def redis_from_url(url: str, what: str = "REDIS_URL",
                   **kwargs: Any) -> aioredis.Redis | RedisCluster:
    """An asyncio client for any URL form above; ``kwargs`` go to the connections (timeouts)."""
    target = parse_redis_url(url, what)
    if target.topology == "single":
        return aioredis.Redis.from_url(url, **kwargs)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.topology == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            ssl=target.tls, **auth, **kwargs,
        )
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    sentinel_kwargs.update(
        username=target.sentinel_username, password=target.sentinel_password,
    )
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        list(target.nodes), sentinel_kwargs=sentinel_kwargs,
    )
    master_kwargs: dict[str, Any] = {**auth, "db": target.db, **kwargs}
    if target.tls:
        # The SSL connection class, chosen the way redis-py's own SentinelConnectionPool does.
        master_kwargs["ssl"] = True
    assert target.service_name is not None
    client: SentinelManagedRedis = sentinel.master_for(
        target.service_name, redis_class=SentinelManagedRedis, **master_kwargs,
    )
    client._sentinel = sentinel
    return client
