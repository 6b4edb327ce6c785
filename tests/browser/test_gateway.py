"""A key issued in the page authenticates through the gateway; revoked in the page, it does not.

The whole product runs as subprocesses (key_service, the demo echo backend and a gateway, with
their own exchange and Redis prefix), and the administrator works only through the browser.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import redis
from playwright.sync_api import Browser, Page, expect

from apikeys_shared.config import generate_secrets
from tests.support.services import RABBITMQ, RABBITMQ_URL, REDIS, REDIS_URL, require
from tests.support.stack import ADMIN_PASSWORD, ADMIN_USER, Stack, StackOptions

from .support import REVOKE, cell, fill_login, open_manage_api_keys, row_for, rows, run_async


async def _delete_exchange(name: str) -> None:
    connection = await aio_pika.connect(RABBITMQ_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(name)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """key_service, the demo backend and one gateway, isolated to this test."""
    require(REDIS)
    require(RABBITMQ)
    tag = uuid.uuid4().hex[:12]
    secrets = generate_secrets()
    running = Stack(
        tmp_path, secrets, exchange=f"t.{tag}.apikeys.events", redis_prefix=f"t:{tag}:",
        queue_prefix=f"t.{tag}", options=StackOptions(
            gateways=1, extra_gateway_env={"GATEWAY_USAGE_REPORT_INTERVAL": "0.2"}),
    )
    try:
        with running:
            yield running
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            for key in client.scan_iter(match=f"t:{tag}:*", count=500):
                client.delete(key)
        finally:
            client.close()
        run_async(lambda: _delete_exchange(running.exchange))


@pytest.fixture
def stack_page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A tab on the stack's key_service."""
    ctx = browser.new_context(locale="en-US", timezone_id="UTC")
    ctx.set_default_timeout(15_000)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


def _through_gateway(stack: Stack, key_id: str, secret: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        stack.gateway_urls[0] + "/api/orders",
        headers={"X-AuthenticationKeyId": key_id, "X-AuthenticationKeyValue": secret},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        exc.close()
        return exc.code, json.loads(body or b"{}")


def test_a_key_issued_in_the_page_works_at_the_gateway_until_revoked_there(
    stack_page: Page, stack: Stack
) -> None:
    page = stack_page
    base = stack.key_service_url
    page.goto(base + "/backoffice/login")
    fill_login(page, (ADMIN_USER, ADMIN_PASSWORD))
    expect(page).to_have_url(base + "/backoffice/")
    open_manage_api_keys(page, base)

    page.get_by_role("button", name="Issue New Key").click()
    page.get_by_label("Key name").fill("Orders client")
    page.get_by_role("button", name="Issue Key").click()
    created = page.get_by_role("dialog", name="New API Key Created")
    # What the administrator copies out of the window and gives to the application.
    key_id = created.locator("#created-id").inner_text()
    secret = created.locator("#created-secret").inner_text()
    created.get_by_role("button", name="Confirm").click()
    expect(rows(page).first).to_have_attribute("data-key-id", key_id)

    status, echo = _through_gateway(stack, key_id, secret)
    assert status == 200, (status, echo, stack.logs())
    headers = {str(name).lower(): value for name, value in echo["headers"]}
    assert headers["x-authenticated-key-id"] == key_id
    assert "x-authenticationkeyvalue" not in headers
    assert "x-authenticationkeyid" not in headers

    # The gateway reports the use (every 0.2 s here, 30 s by default): Last Used moves from
    # Never once the page is loaded again.
    expect(cell(row_for(page, key_id), "Last Used")).to_have_text("Never")
    deadline = time.monotonic() + 20
    while cell(row_for(page, key_id), "Last Used").inner_text() == "Never":
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.2)
        page.reload()
    expect(cell(row_for(page, key_id), "Last Used")).to_have_text("just now")

    row_for(page, key_id).get_by_role("button", name=REVOKE).click()
    dialog = page.get_by_role("dialog", name="Revoke")
    expect(dialog.locator("#revoke-recent")).to_have_text("This key was used just now.")
    dialog.get_by_role("button", name="Confirm").click()
    expect(cell(row_for(page, key_id), "Revoked On")).not_to_have_text("Active")

    # The revocation reaches the gateway by event (or the feed poll): a bound, not a timing test.
    deadline = time.monotonic() + 20
    while True:
        status, body = _through_gateway(stack, key_id, secret)
        if status == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 401, (status, body, stack.logs())
