"""The OpenAPI document names every route of the JSON API, and every route is in it."""

from __future__ import annotations

from aiohttp import web

from apikeys_shared.config import Env, generate_secrets, load_secrets
from key_service.app import create_app
from key_service.config import KeyServiceConfig
from key_service.openapi import OPENAPI


def test_document_and_router_agree(tmp_path: object) -> None:
    values = generate_secrets()
    config = KeyServiceConfig(
        secrets=load_secrets(Env(values), signer=True, verifier=False),
        database_url="sqlite+aiosqlite:///unused.db", data_dir=__import__("pathlib").Path("."),
    )
    app: web.Application = create_app(config)
    routed = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/v1/")
        and route.method != "HEAD"
    }
    documented = {
        (method, path) for path, item in OPENAPI["paths"].items()
        for method in item if method != "parameters"
    }
    assert routed - {("get", "/api/v1/openapi.json")} == documented
    assert OPENAPI["openapi"].startswith("3.1")
