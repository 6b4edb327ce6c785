"""The key_service application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from .api import add_api_routes
from .api_tokens import add_token_routes
from .appkeys import (
    CONFIG,
    ENGINE,
    HEARTBEATS,
    METRICS,
    OUTBOX_WAKEUP,
    SCHEDULER_WAKEUP,
    SESSIONMAKER,
)
from .auth import PASSWORDS, THROTTLE, add_session_routes, csrf_middleware
from .config import KeyServiceConfig
from .db import create_engine, make_sessionmaker
from .heartbeats import Heartbeats
from .internal import add_internal_routes
from .logs import quiet_third_party_loggers
from .metrics import Metrics
from .middleware import API_BODY_LIMIT, access_middleware, error_middleware
from .openapi import add_openapi_route
from .ops import add_ops_routes
from .pages import add_page_routes
from .relay import relay_ctx
from .scheduler import scheduler_ctx
from .subscriber_feed import add_subscriber_feed_route
from .throttle import LoginThrottler
from .usage import usage_pruner_ctx
from .users import PasswordChecker
from .verify_keys import add_verify_keys_route

__all__ = ["create_app"]


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    engine = create_engine(config.database_url)
    sessionmaker = make_sessionmaker(engine)
    app[ENGINE] = engine
    app[SESSIONMAKER] = sessionmaker
    app[THROTTLE] = LoginThrottler(
        sessionmaker, per_pair=config.login_max_failures,
        per_address=config.login_max_failures_per_address,
        per_user=config.login_max_failures_per_user,
        window_seconds=config.login_throttle_window_seconds,
    )
    try:
        yield
    finally:
        await engine.dispose()


def create_app(config: KeyServiceConfig) -> web.Application:
    """Build the app; the database must already be migrated (see ``key_service.db.migrate``)."""
    app = web.Application(
        middlewares=[access_middleware, error_middleware, csrf_middleware],
        client_max_size=API_BODY_LIMIT,
    )
    quiet_third_party_loggers()
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[OUTBOX_WAKEUP] = asyncio.Event()
    app[SCHEDULER_WAKEUP] = asyncio.Event()
    app[HEARTBEATS] = Heartbeats(gone_after=config.gateway_gone_after)
    app[PASSWORDS] = PasswordChecker(config.login_concurrency)
    app.cleanup_ctx.append(_database_ctx)
    add_ops_routes(app)
    add_session_routes(app)
    add_api_routes(app)
    add_token_routes(app)
    add_openapi_route(app)
    add_page_routes(app)
    add_internal_routes(app)
    add_verify_keys_route(app)
    add_subscriber_feed_route(app)
    # After the database context: the relay and the scheduler need the engine and are stopped
    # before it closes.
    app.cleanup_ctx.append(relay_ctx)
    app.cleanup_ctx.append(scheduler_ctx)
    app.cleanup_ctx.append(usage_pruner_ctx)
    return app
