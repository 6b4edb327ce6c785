"""Operations routes: liveness, readiness (the database answers, the gateways' snapshot is made)
and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .appkeys import CONFIG, ENGINE, METRICS, SNAPSHOT_PREPARED
from .db import READ_ONLY
from .middleware import is_in
from .problems import problem

__all__ = ["add_ops_routes"]

log = logging.getLogger("key_service.ops")
READY_TIMEOUT = 2.0


async def healthz(_request: web.Request) -> web.Response:
    """``GET /healthz``: the process is up (200 always)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 when the database answers within two seconds, else 503; and, while
    key_service starts, not before its first try at the gateways' snapshot is over (waited for
    within the same two seconds)."""
    prepared = request.config_dict.get(SNAPSHOT_PREPARED)
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            if prepared is not None:
                await prepared.wait()
            async with request.config_dict[ENGINE].connect() as conn:
                # Read-only: on SQLite a probe must not take the write lock.
                conn = await conn.execution_options(**{READ_ONLY: True})
                await conn.execute(text("SELECT 1"))
    except TimeoutError:
        if prepared is not None and not prepared.is_set():
            return problem(503, "still preparing the gateways' revocation snapshot",
                           headers={"Retry-After": "1"})
        log.warning("not ready: database unavailable (TimeoutError)")
        return _unavailable()
    except (SQLAlchemyError, OSError) as exc:
        log.warning("not ready: database unavailable (%s)", type(exc).__name__)
        return _unavailable()
    return web.json_response({"status": "ready"})


def _unavailable() -> web.Response:
    return problem(503, "the database is not reachable", headers={"Retry-After": "5"})


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format, to the peers KEY_SERVICE_METRICS_ALLOW names."""
    allow = request.config_dict[CONFIG].metrics_allow
    # The connecting peer, never X-Forwarded-For: a client cannot name itself in.
    if allow is not None and (request.remote is None or not is_in(request.remote, allow)):
        return problem(403, "/metrics is served only to the addresses KEY_SERVICE_METRICS_ALLOW "
                            "names.")
    body = generate_latest(request.config_dict[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_ops_routes(app: web.Application) -> None:
    """Register ``/healthz``, ``/readyz`` and ``/metrics``."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
