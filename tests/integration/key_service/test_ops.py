"""Liveness, readiness against a database that goes away, metrics, request IDs and JSON logs."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import pytest

from key_service.app import create_app
from key_service.config import KeyServiceConfig
from key_service.logs import JsonFormatter
from tests.integration.key_service.conftest import AiohttpClient, Client


async def test_healthz_and_readyz(anon: Client) -> None:
    resp = await anon.http.get("/healthz")
    assert resp.status == 200
    resp = await anon.http.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ready"


async def test_metrics_count_requests_and_issues(admin: Client) -> None:
    resp = await admin.http.post("/api/v1/keys", json={"name": "m"}, headers=admin.headers())
    assert resp.status == 201
    text = await (await admin.http.get("/metrics")).text()
    assert "key_service_keys_issued_total 1.0" in text
    assert 'key_service_http_requests_total{method="POST",route="/api/v1/keys",status="201"} 1.0' \
        in text
    assert 'key_service_logins_total{result="ok"} 1.0' in text


async def test_metrics_only_for_the_allowed_peers(
    ks_config: KeyServiceConfig, aiohttp_client: AiohttpClient,
) -> None:
    closed = await aiohttp_client(create_app(replace(
        ks_config, metrics_allow=("10.0.0.0/8",), trusted_proxies=("127.0.0.1",))))
    # The peer decides, never X-Forwarded-For (even from a trusted proxy).
    resp = await closed.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
    assert resp.status == 403
    assert resp.content_type == "application/problem+json"
    assert "KEY_SERVICE_METRICS_ALLOW" in (await resp.json())["detail"]
    assert "key_service_" not in await resp.text()
    assert (await closed.get("/healthz")).status == 200
    opened = await aiohttp_client(create_app(replace(
        ks_config, metrics_allow=("10.0.0.0/8", "127.0.0.1"))))
    resp = await opened.get("/metrics")
    assert resp.status == 200
    assert "key_service_http_requests_total" in await resp.text()


async def test_request_ids_and_json_access_lines(
    anon: Client, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    resp = await anon.http.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    # An ID that could forge log content is replaced by a fresh one.
    resp = await anon.http.get("/healthz", headers={"X-Request-Id": 'bad" id\\n'})
    fresh = resp.headers["X-Request-Id"]
    assert fresh != 'bad" id\\n'
    assert len(fresh) == 36
    lines: list[dict[str, Any]] = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records
        if r.name == "key_service.access"
    ]
    assert [(line["request_id"], line["status"], line["path"]) for line in lines] == [
        ("abc-123", 200, "/healthz"), (fresh, 200, "/healthz"),
    ]
    assert lines[0]["route"] == "/healthz"
    assert "duration_ms" in lines[0]


async def test_redirects_are_logged_and_counted_as_redirects_not_500(
    anon: Client, caplog: pytest.LogCaptureFixture,
) -> None:
    # Page handlers answer with a raised HTTPFound; the access log and the metrics must see the
    # 302 the client gets (a 500 there would page someone for every login redirect).
    caplog.set_level(logging.INFO)
    resp = await anon.http.get(
        "/backoffice/settings", allow_redirects=False, headers={"X-Request-Id": "redir-1"},
    )
    assert resp.status == 302
    assert resp.headers["X-Request-Id"] == "redir-1"
    lines = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records
        if r.name == "key_service.access"
    ]
    assert [(line["request_id"], line["status"]) for line in lines] == [("redir-1", 302)]
    text = await (await anon.http.get("/metrics")).text()
    assert (
        'key_service_http_requests_total{method="GET",route="/backoffice/settings",status="302"}'
        ' 1.0'
    ) in text
    assert 'status="500"' not in text
