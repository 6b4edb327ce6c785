"""Routes for gateways: the signed event feed and key lookup (placeholder until they land)."""

from __future__ import annotations

from aiohttp import web


def add_internal_routes(app: web.Application) -> None:
    """Register ``/internal/v1/*`` on ``app``."""
