"""The Backoffice page (placeholder until the page lands; owned by the page work)."""

from __future__ import annotations

from aiohttp import web


def add_page_routes(app: web.Application) -> None:
    """Register the Backoffice page routes on ``app``."""
