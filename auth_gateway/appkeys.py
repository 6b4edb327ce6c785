"""Typed application keys shared by auth_gateway's modules (and the event consumer in sync.py)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from .abuse import FailureCounter
from .auth import Authenticator
from .config import GatewayConfig
from .keyservice import KeyServiceClient
from .keystore import KeyStore
from .metrics import Metrics
from .proxy import Forwarder
from .redisclient import RedisClient
from .routes import RouteTable

__all__ = [
    "AUTHENTICATOR",
    "AUTH_REASON",
    "CONFIG",
    "FAILURES",
    "FORWARDER",
    "KEYSTORE",
    "KEY_SERVICE",
    "KEY_SERVICE_SESSION",
    "LOG_KEY_ID",
    "METRICS",
    "REDIS",
    "REQUEST_ID",
    "ROUTES",
    "ROUTE_LABEL",
    "UPSTREAM_SESSION",
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
# The pooled keep-alive session every forwarded request goes through.
UPSTREAM_SESSION = web.AppKey("upstream_session", aiohttp.ClientSession)
KEYSTORE = web.AppKey("keystore", KeyStore)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
FAILURES = web.AppKey("failures", FailureCounter)
FORWARDER = web.AppKey("forwarder", Forwarder)

# Per request, for the access log and metrics.
REQUEST_ID = web.RequestKey("request_id", str)
ROUTE_LABEL = web.RequestKey("route_label", str)
LOG_KEY_ID = web.RequestKey("log_key_id", str)
AUTH_REASON = web.RequestKey("auth_reason", str)
