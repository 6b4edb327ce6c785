"""Checking problem+json answers of the JSON API."""

from __future__ import annotations

from aiohttp import ClientResponse

PROBLEM = "application/problem+json"


async def expect_problem(
    resp: ClientResponse, status: int, field: str | None = None,
) -> dict[str, object]:
    """Assert ``resp`` is an RFC 9457 problem of ``status`` (naming ``field``); its body."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body = await resp.json(content_type=PROBLEM)
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert isinstance(body["detail"], str)
    assert body["detail"]
    if field is not None:
        assert body["field"] == field
    return dict(body)
