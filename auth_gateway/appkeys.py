"""Typed application keys shared by auth_gateway's modules (and the event consumer in sync.py)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from .auth import Authenticator
from .config import GatewayConfig
from .key_service_client import KeyServiceClient
from .keystore import KeyStore
from .metrics import Metrics
from .proxy import Forwarder
from .redisclient import RedisClient
from .routes import RouteTable
from .throttle import FailureCounter
from .upstream import UpstreamPool
from .usage import UsageRecorder

__all__ = [
    "AUTHENTICATOR",
    "CONFIG",
    "FAILURES",
    "FORWARDER",
    "KEYSTORE",
    "KEY_SERVICE",
    "KEY_SERVICE_SESSION",
    "METRICS",
    "REDIS",
    "ROUTES",
    "UPSTREAM_POOL",
    "USAGE",
]

CONFIG = web.AppKey("config", GatewayConfig)
METRICS = web.AppKey("metrics", Metrics)
ROUTES = web.AppKey("routes", RouteTable)
# One Redis client per process (its own connection pool): a single server, a Sentinel-managed
# master, or a Cluster.
REDIS: web.AppKey[RedisClient] = web.AppKey("redis")
# The pooled session for key_service's internal API, kept apart from the upstream pool so that
# busy upstreams cannot starve key lookups.
KEY_SERVICE_SESSION = web.AppKey("key_service_session", aiohttp.ClientSession)
KEY_SERVICE = web.AppKey("key_service", KeyServiceClient)
# The pooled keep-alive connections every forwarded request goes through.
UPSTREAM_POOL = web.AppKey("upstream_pool", UpstreamPool)
KEYSTORE = web.AppKey("keystore", KeyStore)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
FAILURES = web.AppKey("failures", FailureCounter)
FORWARDER = web.AppKey("forwarder", Forwarder)

# Per key, the last authenticated request and a count (usage.py).
USAGE = web.AppKey("usage", UsageRecorder)
